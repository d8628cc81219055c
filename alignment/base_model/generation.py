"""Batched sampling with a preallocated KV cache.

Prompts are left-padded to a common length so every row writes the cache at the same position:
one prefill pass over the prompts, then one token per step for all rows. Rows that produced EOS
keep being fed padding (and are masked out) until every row is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.base_model.kv_cache import KVCache


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    seed: int | None = None


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # [B, P + N] prompt (left-padded) then response (right-padded)
    response_mask: torch.Tensor  # [B, N] 1 for generated tokens up to and including EOS
    logprobs: torch.Tensor  # [B, N] log-prob of each token under the sampling distribution
    prompt_length: int


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf. logits [B, V]."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass.
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: torch.Tensor, cfg: SamplingConfig, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return it [B] and its log-prob [B] under the sampling distribution."""
    logits = logits.float()
    if cfg.temperature == 0:
        token = logits.argmax(-1)
        return token, torch.zeros_like(token, dtype=torch.float32)
    logits = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
    logprobs = logits.log_softmax(-1)
    token = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


@torch.no_grad()
def generate(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: SamplingConfig
) -> GenerationOutput:
    """Sample up to cfg.max_new_tokens per row. input_ids, attention_mask [B, P], left-padded."""
    B, P = input_ids.shape
    device = input_ids.device
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    cache = KVCache.for_model(model, B, P + cfg.max_new_tokens)
    eos = torch.tensor(cfg.eos_token_ids or [-1], device=device)
    mask = torch.cat([attention_mask, attention_mask.new_zeros(B, cfg.max_new_tokens)], dim=1)  # [B, P + N]
    tokens = input_ids.new_full((B, cfg.max_new_tokens), cfg.pad_token_id)
    logprobs = torch.zeros(B, cfg.max_new_tokens, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)

    logits = model(input_ids, attention_mask=mask[:, :P], kv_cache=cache, logits_to_keep=1).logits[:, -1]
    for step in range(cfg.max_new_tokens):
        token, logprob = next_token(logits, cfg, generator)
        token = torch.where(done, cfg.pad_token_id, token)
        tokens[:, step] = token
        logprobs[:, step] = torch.where(done, 0.0, logprob)
        mask[:, P + step] = (~done).long()
        done = done | torch.isin(token, eos)
        if bool(done.all()) or step + 1 == cfg.max_new_tokens:
            break
        logits = model(
            token[:, None], attention_mask=mask[:, : P + step + 1], kv_cache=cache, cache_start=P + step
        ).logits[:, -1]
    return GenerationOutput(
        sequences=torch.cat([input_ids, tokens], dim=1),
        response_mask=mask[:, P:],
        logprobs=logprobs,
        prompt_length=P,
    )


def left_pad(batch: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (input_ids, attention_mask) [B, P], padded on the left."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def chat(model, tokenizer, conversations: list[list[dict]], cfg: SamplingConfig | None = None) -> list[str]:
    """Answer each conversation (a list of role/content messages) with the tokenizer's chat template."""
    cfg = cfg or SamplingConfig(temperature=0)
    if not cfg.eos_token_ids:
        cfg.eos_token_ids = tuple(i for i in [tokenizer.eos_token_id] if i is not None)
        cfg.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)
        for c in conversations
    ]
    input_ids, attention_mask = left_pad([list(p) for p in prompts], cfg.pad_token_id)
    device = next(model.parameters()).device
    out = generate(model, input_ids.to(device), attention_mask.to(device), cfg)
    responses = out.sequences[:, out.prompt_length :]
    return [
        tokenizer.decode(ids[m.bool()], skip_special_tokens=True).strip()
        for ids, m in zip(responses, out.response_mask, strict=True)
    ]
