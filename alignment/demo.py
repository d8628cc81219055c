"""`make demo`: the main job. Until the whole pipeline exists it runs `recipes/sft.yaml` (SFT of
the embedded SmolLM2 on the gym, a few minutes on two CPU cores), prints what changed and where the
results are, and answers a chat prompt with the fine-tuned model."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from alignment.errors import PaddockError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sft.yaml"


def main(argv: list[str] | None = None) -> int:
    from alignment.base_model import load_model, load_tokenizer
    from alignment.base_model.generation import chat
    from alignment.pipeline import run_recipe

    overrides = list(argv if argv is not None else sys.argv[1:])
    try:
        began = time.perf_counter()
        run_dir = run_recipe(RECIPE, overrides)
        stage = run_dir / "sft"
        summary = json.loads((stage / "summary.json").read_text())
        model = load_model(stage / "model").eval()
        tokenizer = load_tokenizer(stage / "model")
        question = "What is 17 plus 25?"
        answer = chat(model, tokenizer, [[{"role": "user", "content": question}]])[0]
    except PaddockError as err:
        print(f"paddock: error: {err}", file=sys.stderr)
        return 2
    before, after = summary.get("gold_before") or {}, summary.get("gold_after") or {}
    print(f"\nrecipe done in {time.perf_counter() - began:.0f}s (stages already complete are skipped)")
    print(f"  held-out loss:            {summary['final'].get('eval_loss', float('nan')):.3f}")
    if before and after:
        print(
            f"  gold-grader score (gym):  {before['score']:.3f} before -> {after['score']:.3f} after "
            f"({after['n']} held-out prompts)"
        )
    print(f"  user> {question}\n  sft> {answer}")
    print(f"\nresults: {stage}  (summary.json, metrics.jsonl, plots/loss.png, model/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
