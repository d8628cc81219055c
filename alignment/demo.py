"""`make demo`: the main job. Until the pipeline stages exist it prepares the embedded default
model and answers a few chat prompts through Paddock's own model and generation path."""

from __future__ import annotations

import sys
import time

from alignment.base_model import default_models, load_model, load_tokenizer
from alignment.base_model.generation import SamplingConfig, chat
from alignment.errors import PaddockError

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for staying focused while studying.",
    "What is 12 plus 30?",
]


def main() -> int:
    try:
        start = time.perf_counter()
        path = default_models.prepare()
        print(f"default model: {path} (ready in {time.perf_counter() - start:.1f}s)")
        model = load_model(path).eval()
        tokenizer = load_tokenizer(path)
        start = time.perf_counter()
        answers = chat(
            model,
            tokenizer,
            [[{"role": "user", "content": p}] for p in PROMPTS],
            SamplingConfig(max_new_tokens=48, temperature=0),
        )
    except PaddockError as err:
        print(f"paddock: error: {err}", file=sys.stderr)
        return 2
    for prompt, answer in zip(PROMPTS, answers, strict=True):
        print(f"\nuser> {prompt}\nsmollm2-135m> {answer}")
    print(f"\n{len(PROMPTS)} answers in {time.perf_counter() - start:.1f}s (greedy, batched, KV cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
