"""`make demo`: the main job. Runs `recipes/quickstart.yaml`, the whole Llama 2-Chat pipeline at small
sizes (SFT -> both RMs -> rejection sampling -> Ghost Attention -> PPO -> context distillation ->
evaluation) on the embedded SmolLM2, with progress bars, then prints the gold-grader rates after
each stage, a chat answer from the final model (through the generation engine), and last of all
the path of the run report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from alignment.errors import PaddockError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"


def rates_table(summary: dict) -> list[str]:
    lines = [f"  {'model':<22}{'helpful correct':>17}{'unsafe compliance':>19}{'false refusal':>15}"]
    for name in summary["models"]:  # pipeline order (the summary's gold dict is key-sorted)
        gold = summary["gold"][name]
        cells = [gold.get(k) for k in ("helpful_correct", "unsafe_compliance", "false_refusal")]
        lines.append(
            f"  {name:<22}"
            + "".join(
                f"{'–' if c is None else f'{c:.3f}':>{w}}" for c, w in zip(cells, (17, 19, 15), strict=True)
            )
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    from alignment.base_model.generation import chat
    from alignment.model_setup import load_frozen
    from alignment.pipeline import run_recipe
    from alignment.recipes import load_recipe

    overrides = list(argv if argv is not None else sys.argv[1:])
    try:
        began = time.perf_counter()
        run_dir = run_recipe(RECIPE, overrides)
        recipe = load_recipe(RECIPE, overrides)
        evaluation = [s for s in recipe.stages if s.type == "evaluation"][-1]
        summary = json.loads((run_dir / evaluation.name / "summary.json").read_text())
        final = [s for s in recipe.stages if s.type != "evaluation"][-1]
        model = load_frozen(recipe.model, str(run_dir / final.name / "model"))
        from alignment.base_model import load_tokenizer
        from alignment.model_setup import resolve_init

        tokenizer = load_tokenizer(resolve_init(str(run_dir / final.name / "model"))[0])
        question = "What is 17 plus 25?"
        answer = chat(model, tokenizer, [[{"role": "user", "content": question}]])[0]
    except PaddockError as err:
        print(f"paddock: error: {err}", file=sys.stderr)
        return 2
    print(f"\npipeline done in {time.perf_counter() - began:.0f}s (stages already complete are skipped)")
    print("gold graders on held-out gym prompts, after each stage:")
    print("\n".join(rates_table(summary)))
    print(f"  user> {question}\n  {final.name}> {answer}")
    print(f"\nreport: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
