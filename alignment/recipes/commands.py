"""`paddock recipes list | validate | schema`, and the generated field reference in docs/recipes.md.

The reference is generated from the schema dataclasses (their types, defaults and help lines), and a
test compares docs/recipes.md with `schema_markdown()`, so the documentation cannot drift from what
the loader accepts. Regenerate it with `paddock recipes schema > docs/recipes.md`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from alignment.errors import PaddockError
from alignment.recipes import default_recipes_dir, find_recipes, read_yaml, validate_recipe
from alignment.recipes.config import RecipeError, field_types, type_name
from alignment.recipes.schema import StageConfig, schema_classes, stage_configs

INTRO = """\
# Recipe reference

<!-- Generated from alignment/recipes/schema.py by `paddock recipes schema > docs/recipes.md`;
     tests/test_recipes_config.py fails when this file is out of date. Do not edit by hand. -->

A recipe is a YAML file that names a run, its base model and its stages, run in order with
`paddock run recipes/<name>.yaml`. It is validated strictly before any compute starts: an unknown
key is an error naming the key, where it is and the closest valid key; a wrong type or value names
the path and what was expected. `paddock recipes validate` checks recipes without running them.

Override any value on the command line with `KEY=VALUE` (the value is YAML, so `1e-5`, `true` and
`[a, b]` work): `seed=3`, `model.lora.r=8`, `stages.0.init_from=./ckpt`, or address a list item by
name, `stages.sft.data.max_rows=200`, `stages.rm.data.sources.helpful.on_error=skip`.

Each stage writes its artifacts to `<output_dir>/<run_name>/<stage name>/`.
"""


def field_default(f: dataclasses.Field) -> str:
    if "doc_default" in f.metadata:
        return f.metadata["doc_default"]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return f"default: all {type(value).__name__} defaults"
    return f"default `{json.dumps(value)}`"


def class_markdown(cls: type) -> str:
    stage_type = next((kind for kind, c in stage_configs().items() if c is cls), None)
    if stage_type is not None:
        title = f"## Stage `{stage_type}` ({cls.__name__})"
        intro = "Common fields of StageConfig, plus:"
        own = {name: v for name, v in field_types(cls).items() if name not in field_types(StageConfig)}
    else:
        title, intro, own = f"## {cls.__name__}", "", field_types(cls)
    lines = [title, "", " ".join((cls.__doc__ or "").split())]
    if intro:
        lines += ["", intro]
    lines.append("")
    for name, (tp, f) in own.items():
        help_text = f.metadata.get("help", "")
        lines.append(f"- `{name}`: `{type_name(tp)}`, {field_default(f)}. {help_text}")
    return "\n".join(lines) + "\n"


def schema_markdown() -> str:
    """The recipe field reference: every dataclass, every field with type, default and help."""
    sections = [INTRO] + [class_markdown(cls) for cls in schema_classes()]
    if not stage_configs():
        sections.append("## Stage types\n\nNo stage types are registered.\n")
    return "\n".join(sections)


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def recipe_files(paths: list[str], directory: str | None) -> list[Path]:
    if not paths:
        return find_recipes(directory)
    files: list[Path] = []
    for given in map(Path, paths):
        files += find_recipes(given) if given.is_dir() else [given]
    return files


def cmd_list(args) -> None:
    files = find_recipes(args.dir)
    if not files:
        print(f"no recipe files under {args.dir or default_recipes_dir()}")
    for path in files:
        try:
            raw, _ = read_yaml(path)
        except RecipeError as err:
            print(f"{display(path)}\t(unreadable: {err})")
            continue
        stages = raw.get("stages") if isinstance(raw.get("stages"), list) else []
        names = [str(s.get("name") or s.get("type") or "?") if isinstance(s, dict) else "?" for s in stages]
        print(f"{display(path)}\t{raw.get('run_name', '?')}\t{' -> '.join(names) or '(no stages)'}")


def cmd_validate(args) -> None:
    files = recipe_files(args.paths, args.dir)
    if not files:
        print(f"no recipe files under {args.dir or default_recipes_dir()}")
        return
    failed = 0
    for path in files:
        try:
            recipe = validate_recipe(display(path))
            if args.data:
                from alignment.plan import check_recipe_data

                plans = check_recipe_data(recipe)
        except PaddockError as err:  # a RecipeError, or a data source that does not load
            failed += 1
            print(f"{display(path)}: {err}" if not isinstance(err, RecipeError) else err)
        else:
            rows = sum(p.data.get("train_rows", 0) for p in plans) if args.data else 0
            note = f" (data: {rows} training rows over all stages)" if args.data else ""
            print(f"ok {display(path)}{note}")
    if failed:
        raise RecipeError(f"{failed} of {len(files)} recipe(s) failed validation")


def cmd_schema(args) -> None:
    print(schema_markdown(), end="")


def add_commands(subparsers) -> None:
    """Add `recipes list|validate|schema` to the CLI's subparsers."""
    parser = subparsers.add_parser("recipes", help="list, validate and document recipe files")
    actions = parser.add_subparsers(dest="recipes_action", required=True)
    listing = actions.add_parser("list", help="each recipe with its run name and stages")
    listing.add_argument("--dir", help="directory to search (default: the repository's recipes/)")
    listing.set_defaults(func=cmd_list)
    validate = actions.add_parser("validate", help="check recipes strictly without running anything")
    validate.add_argument(
        "paths", nargs="*", metavar="PATH", help="recipe files or directories (default: all recipes)"
    )
    validate.add_argument("--dir", help="directory to search when no PATH is given")
    validate.add_argument(
        "--data", action="store_true", help="also read every row of every data source, as `paddock run` will"
    )
    validate.set_defaults(func=cmd_validate)
    schema = actions.add_parser("schema", help="print the field reference (Markdown, as in docs/recipes.md)")
    schema.set_defaults(func=cmd_schema)
