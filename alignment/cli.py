"""The `paddock` command line. Expected failures print one line (`paddock: error: ...`), exit 2.

Usage mistakes caught by argparse are one line too (pointing to `--help` instead of printing the
usage), so a script or a person reading a log sees every failure the same way.
"""

from __future__ import annotations

import argparse
import sys

from alignment import __version__
from alignment.errors import PaddockError
from alignment.placement import DEVICE_HELP


def cmd_models_list(args) -> None:
    from alignment.base_model import default_models

    for name, spec in default_models.DEFAULT_MODELS.items():
        state = (
            f"prepared at {default_models.cached_path(name)}"
            if default_models.is_prepared(name)
            else ("not prepared yet (`paddock models prepare " + name + "`)")
        )
        print(f"{name}\t{spec.description}\t{state}")
    print(
        "Any local Hugging Face checkpoint of a supported family (llama, mistral, qwen2, qwen3) "
        "also works as a model path."
    )


def cmd_models_prepare(args) -> None:
    from alignment.base_model import default_models

    print(default_models.prepare(args.name))


def cmd_models_import_gguf(args) -> None:
    from alignment.base_model import convert_gguf

    print(convert_gguf(args.gguf_file, args.output))


def cmd_chat(args) -> None:
    from alignment.base_model import load_model, load_tokenizer
    from alignment.base_model.generation import SamplingConfig, chat
    from alignment.placement import resolve_device

    model = load_model(args.model, dtype=args.dtype, device=resolve_device(args.device)).eval()
    tokenizer = load_tokenizer(args.model)
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    prompts = args.prompt or []
    interactive = not prompts
    while True:
        if interactive:
            try:
                prompts = [input("you> ")]
            except EOFError:
                return
        for prompt in prompts:
            answer = chat(model, tokenizer, [[{"role": "user", "content": prompt}]], cfg)[0]
            print(answer if not interactive else f"model> {answer}")
        if not interactive:
            return


def cmd_run(args) -> None:
    from alignment.pipeline import run_recipe

    run_dir = run_recipe(
        args.recipe, args.overrides, only=args.stage, rerun=args.rerun or (), dry_run=args.dry_run
    )
    if not args.dry_run:
        print(f"results: {run_dir}")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line; subcommand parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


def one_line(text: str) -> str:
    """Messages that quote another library (YAML, pyarrow, datasets) may span lines; the CLI prints
    one line, so the line breaks become spaces."""
    return " ".join(str(text).split())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="paddock", description="Llama 2-Chat style RLHF and safety alignment")
    parser.add_argument("--version", action="version", version=f"paddock {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="embedded default models").add_subparsers(
        dest="action", required=True
    )
    models.add_parser("list", help="list named models and whether they are prepared").set_defaults(
        func=cmd_models_list
    )
    prepare = models.add_parser("prepare", help="convert a named model to an HF checkpoint; print its path")
    prepare.add_argument("name", nargs="?", default="smollm2-135m")
    prepare.set_defaults(func=cmd_models_prepare)
    gguf = models.add_parser(
        "import-gguf", help="dequantise a GGUF file (llama, qwen2, qwen3) into an HF checkpoint"
    )
    gguf.add_argument("gguf_file")
    gguf.add_argument("output")
    gguf.set_defaults(func=cmd_models_import_gguf)

    chat = commands.add_parser(
        "chat", help="chat with a checkpoint (one-shot with --prompt, else interactive)"
    )
    chat.add_argument("model", nargs="?", default="smollm2-135m", help="model name or checkpoint path")
    chat.add_argument("--prompt", action="append", help="answer this prompt and exit (repeatable)")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    chat.add_argument("--seed", type=int, default=0)
    chat.add_argument("--dtype", default="float32")
    chat.add_argument("--device", default="auto", help=DEVICE_HELP)
    chat.set_defaults(func=cmd_chat)

    run = commands.add_parser("run", help="run a recipe's stages (resumes unfinished, skips finished)")
    run.add_argument("recipe", help="recipe YAML file")
    run.add_argument("overrides", nargs="*", help="overrides like stages.sft.learning_rate=1e-5")
    run.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    run.add_argument(
        "--rerun",
        action="append",
        metavar="STAGE",
        help="run this stage again from scratch, and every stage that builds on it (repeatable); "
        "needed when a finished stage's settings or data changed",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything (recipe, data, fingerprints) and print the plan; write nothing",
    )
    run.set_defaults(func=cmd_run)

    from alignment.recipes.commands import add_commands as add_recipe_commands

    add_recipe_commands(commands)

    from alignment.data.inspect import add_commands as add_data_commands

    add_data_commands(commands)

    from reward_models.commands import add_commands as add_rm_commands

    add_rm_commands(commands)

    from safety.gold_compare import add_commands as add_gold_commands

    add_gold_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except PaddockError as err:
        print(f"paddock: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paddock: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
