"""Answer conversations with the generation engine, in the chat format a stage trains with.

Every stage that samples (gold evaluation, rejection sampling, PPO rollouts, context distillation)
goes through here, so they all encode prompts and decode answers the same way.

Under several processes a stage that samples a whole list (rejection sampling, GAtt, context
distillation, the gold suite, evaluation) passes `split=True`: each process generates its share of
the generation batches (`distributed.my_batches`) and every process gets all the answers back. A
batch's prompts and seed (the sampling seed and the batch's index) do not depend on which process
runs it, so the answers are exactly those of one process. `prompts_generated()` counts this
process's share for the stage summary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from alignment import distributed
from alignment.base_model.generation import GenerationOutput, SamplingConfig, generate_from_tokens
from alignment.data.chat_format import encode_prompt
from alignment.precision import bf16_autocast


@dataclass
class Answers:
    texts: list[str]  # [len(prompts) * n], prompt-major
    outputs: list[GenerationOutput]  # one per generation batch
    prompt_ids: list[list[int]]  # encoded prompts, [len(prompts)]


def sampling_for(tokenizer, **settings) -> SamplingConfig:
    """A SamplingConfig that stops at the tokenizer's EOS and pads with its pad token."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return SamplingConfig(eos_token_ids=(eos,) if eos is not None else (), pad_token_id=pad, **settings)


def decode_responses(tokenizer, out: GenerationOutput) -> list[str]:
    return [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip()
        for ids, mask in zip(out.responses, out.response_mask, strict=True)
    ]


_generated = {"prompts": 0}


def prompts_generated() -> int:
    """Prompts this process has answered since the last `reset_prompts_generated()`."""
    return _generated["prompts"]


def reset_prompts_generated() -> None:
    _generated["prompts"] = 0


@torch.no_grad()
def answer(
    model,
    tokenizer,
    conversations: list[list[dict]],
    sampling: SamplingConfig,
    style: str = "template",
    autocast: bool = False,
    batch_size: int = 32,
    max_prompt_tokens: int | None = None,
    progress: str | None = None,
    split: bool = False,
) -> Answers:
    """`sampling.n` answers to each conversation (prompt-major order). Batches are seeded from
    `sampling.seed` and their index, so the answers do not depend on the batch they fell in.
    `progress`: a description for a progress bar over the prompts (None: no bar). `split`: share
    the batches among processes (module docstring); `outputs` then holds this process's only.
    `model`: a model (Paddock's engine runs on it) or an external engine from `StageContext.sampler`,
    which answers all of this process's batches in one request (one `outputs` entry)."""
    from tqdm.auto import tqdm

    prompt_ids = [encode_prompt(c, tokenizer, style=style) for c in conversations]
    if max_prompt_tokens:
        prompt_ids = [ids[-max_prompt_tokens:] for ids in prompt_ids]
    starts = range(0, len(prompt_ids), batch_size)
    mine = distributed.my_batches(len(starts)) if split else list(range(len(starts)))
    batches = {index: prompt_ids[starts[index] : starts[index] + batch_size] for index in mine}
    seeds = {index: None if sampling.seed is None else sampling.seed * 1_000_003 + index for index in mine}
    total = sum(len(batch) for batch in batches.values())
    bar = tqdm(total=total, desc=progress, unit="prompt", disable=progress is None, leave=False)
    if hasattr(model, "generate_tokens"):  # an external engine (alignment/engines)
        texts_by_batch, outputs = _engine_answers(model, tokenizer, batches, batch_size, sampling, bar)
    else:
        texts_by_batch, outputs = {}, []
        was_training = model.training
        model.eval()
        with bf16_autocast(model, autocast):
            for index, batch in batches.items():
                out = generate_from_tokens(model, batch, replace(sampling, seed=seeds[index]), tokenizer)
                outputs.append(out)
                texts_by_batch[index] = decode_responses(tokenizer, out)
                bar.update(len(batch))
        model.train(was_training)
    bar.close()
    _generated["prompts"] += total
    texts = distributed.gather_batches(texts_by_batch, across_processes=split)
    return Answers(texts, outputs, prompt_ids)


def _engine_answers(engine, tokenizer, batches: dict, batch_size: int, sampling: SamplingConfig, bar):
    """All of this process's batches in one request, so the engine can batch them continuously;
    each prompt is seeded by its index in the whole list (seed · 1000003 + index)."""
    prompts = [ids for batch in batches.values() for ids in batch]
    if not prompts:  # another process has all the batches
        return {}, []
    per_prompt = [
        None if sampling.seed is None else sampling.seed * 1_000_003 + index * batch_size + j
        for index, batch in batches.items()
        for j in range(len(batch))
    ]
    done = {"prompts": 0}

    def advance(finished: int) -> None:
        bar.update(finished - done["prompts"])
        done["prompts"] = finished

    out = engine.generate_tokens(prompts, sampling, per_prompt, on_progress=advance)
    texts, texts_by_batch, row = decode_responses(tokenizer, out), {}, 0
    for index, batch in batches.items():
        texts_by_batch[index] = texts[row : row + len(batch) * sampling.n]
        row += len(batch) * sampling.n
    return texts_by_batch, [out]
