"""The generation engine: batched sampling with a preallocated KV cache, built for RLHF workloads.

Rejection sampling, PPO rollouts, Ghost Attention and context distillation all draw several
samples per prompt, so the engine is shaped around that:
- prompts are left-padded to one length so every row writes the cache at the same position;
- each distinct prompt is prefilled once and its cache rows are copied for its n samples
  (transformers' `num_return_sequences` prefills every copy);
- rows that hit EOS or a stop string are dropped from the batch (cache rows included) once enough
  of them have finished, so finished samples stop costing compute;
- every sampled token's log-prob under the sampling distribution (after temperature, top-k and
  top-p) is returned, which is what PPO's ratio needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignment.base_model.kv_cache import KVCache


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    n: int = 1  # samples per prompt
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()  # needs a tokenizer
    pad_token_id: int = 0
    seed: int | None = None
    compact_below: float = 0.75  # drop finished rows when the live fraction falls below this
    compile: bool = False  # torch.compile the decode step (pays off for long generations)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.n < 1:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0 and n >= 1")


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # [R, P + N] prompt (left-padded) then response (right-padded); R = B * n
    response_mask: torch.Tensor  # [R, N] 1 for generated tokens, up to and including EOS/stop string
    logprobs: torch.Tensor  # [R, N] log-prob of each token under the sampling distribution
    prompt_length: int  # P
    prompt_mask: torch.Tensor = field(repr=False, default=None)  # [R, P]

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length :]

    @property
    def attention_mask(self) -> torch.Tensor:
        """[R, P + N] mask of real tokens, for scoring the sequences with a forward pass."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf. logits [R, V]."""
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


class Sampler:
    """Draws one token per row and its log-prob under the sampling distribution.

    Works in two reused [rows, V] fp32 buffers: fresh 25 MB tensors every step cost more in page
    faults than the arithmetic on them. Sampling is by inverse CDF from one uniform per row;
    torch.multinomial draws an exponential per vocabulary entry (49k per row), which made it the
    slowest op of a decode step on the CPU.
    """

    def __init__(self, cfg: SamplingConfig):
        self.cfg = cfg
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def _workspace(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, vocab = logits.shape
        if self.buffers is None or self.buffers[0].shape[0] < rows or self.buffers[0].shape[1] != vocab:
            self.buffers = tuple(torch.empty(rows, vocab, device=logits.device) for _ in range(2))
        return self.buffers[0][:rows], self.buffers[1][:rows]

    def __call__(self, logits: torch.Tensor, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [R, V], uniforms [R, 1] in [0, 1) -> token [R], log-prob [R]. Greedy returns the
        model's own log-prob (temperature 1): a point mass would carry no information."""
        cfg = self.cfg
        scores, cdf = self._workspace(logits)
        scores.copy_(logits)
        if cfg.temperature == 0:
            token = scores.argmax(-1)
            return token, scores.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
        if cfg.temperature != 1.0:
            scores.div_(cfg.temperature)
        if cfg.top_k or cfg.top_p < 1.0:
            scores.copy_(filter_logits(scores, cfg.top_k, cfg.top_p))
        # Unnormalised probabilities in place: exp(s - max) keeps every entry in (0, 1].
        scores.sub_(scores.amax(-1, keepdim=True)).exp_()
        return inverse_cdf_sample(scores, uniforms, cdf)


def inverse_cdf_sample(weights: torch.Tensor, uniforms: torch.Tensor, cdf: torch.Tensor | None = None):
    """Token [R] and its log-prob [R] for rows of non-negative weights [R, V], one uniform per row.

    The fp32 cumulative sum is off by ~1e-6 of the total at the end of a 49k vocabulary, far below
    sampling noise (fp64 cost 12x more); adding a zero weight is exact, so `right=True` never lands
    on a zero-probability token.
    """
    cdf = torch.cumsum(weights, -1, out=cdf) if cdf is not None else weights.cumsum(-1)
    total = cdf[:, -1:]
    token = torch.searchsorted(cdf, uniforms.to(cdf.dtype) * total, right=True).clamp(
        max=weights.shape[-1] - 1
    )
    logprob = weights.gather(-1, token).log() - total.log()
    return token.squeeze(-1), logprob.squeeze(-1)


class StopStringMatcher:
    """Finds rows whose decoded tail ends a stop string. Decodes only a short tail per row."""

    def __init__(self, tokenizer, stop_strings):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        longest = max(len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stop_strings)
        self.window = longest + 2  # tokens may split differently around the string's edges

    def hits(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens [R, N] response so far, lengths [R] tokens generated per row -> bool [R]."""
        tails = [tokens[r, max(0, int(n) - self.window) : int(n)].tolist() for r, n in enumerate(lengths)]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
        return torch.tensor(
            [any(s in text for s in self.stop_strings) for text in texts], device=tokens.device
        )


@torch.no_grad()
def generate(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: SamplingConfig, tokenizer=None
) -> GenerationOutput:
    """Sample cfg.n continuations of each left-padded prompt. input_ids, attention_mask [B, P].

    Rows come out prompt-major: row i * n + j is sample j of prompt i.
    """
    if cfg.stop_strings and tokenizer is None:
        raise ValueError("stop_strings need the tokenizer passed to generate()")
    B, P = input_ids.shape
    N, n = cfg.max_new_tokens, cfg.n
    R = B * n
    device = input_ids.device
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed if cfg.seed is not None else int(torch.randint(2**62, ()).item()))
    matcher = StopStringMatcher(tokenizer, cfg.stop_strings) if cfg.stop_strings else None
    sampler = Sampler(cfg)
    eos = torch.tensor(cfg.eos_token_ids or [-1], device=device)
    step_fn = _compiled_step(model) if cfg.compile else model

    # Prefill each prompt once, then give every sample its own copy of the prompt's cache rows.
    cache = KVCache.for_model(model, B, P + N)
    logits = model(input_ids, attention_mask=attention_mask, kv_cache=cache, logits_to_keep=1).logits[:, -1]
    if n > 1:
        cache.select_rows(torch.arange(B, device=device).repeat_interleave(n))
        logits = logits.repeat_interleave(n, dim=0)
    prompt_mask = attention_mask.repeat_interleave(n, dim=0)  # [R, P]

    tokens = input_ids.new_full((R, N), cfg.pad_token_id)
    logprobs = torch.zeros(R, N, device=device)
    lengths = torch.zeros(R, dtype=torch.long, device=device)
    live = torch.arange(R, device=device)  # original row of each row still in the batch
    live_mask = torch.cat([prompt_mask, prompt_mask.new_zeros(R, N)], dim=1)  # [live, P + N]
    finished = torch.zeros(R, dtype=torch.bool, device=device)  # indexed like `live`
    for step in range(N):
        # Uniforms are drawn for every original row, finished or not, so a row's samples do not
        # depend on when other rows finished and the batch was compacted.
        uniforms = torch.rand(R, 1, generator=generator, dtype=torch.float64, device=device)[live]
        token, logprob = sampler(logits, uniforms)
        token = torch.where(finished, cfg.pad_token_id, token)
        tokens[live, step] = token
        logprobs[live, step] = torch.where(finished, 0.0, logprob)
        live_mask[:, P + step] = (~finished).long()
        lengths[live] += (~finished).long()
        finished = finished | torch.isin(token, eos)
        if matcher is not None:
            finished = finished | matcher.hits(tokens[live], lengths[live])
        if bool(finished.all()) or step + 1 == N:
            break
        if (~finished).float().mean() < cfg.compact_below:
            keep = (~finished).nonzero().squeeze(-1)
            live, live_mask, finished = live[keep], live_mask[keep], finished[keep]
            cache.select_rows(keep)
            token = token[keep]
        position = torch.tensor(P + step, device=device)
        out = step_fn(token[:, None], attention_mask=live_mask, kv_cache=cache, cache_start=position)
        logits = out.logits[:, -1]

    response_mask = (torch.arange(N, device=device)[None] < lengths[:, None]).long()
    sequences = torch.cat([input_ids.repeat_interleave(n, dim=0), tokens], dim=1)
    return GenerationOutput(sequences, response_mask, logprobs, P, prompt_mask)


def _compiled_step(model):
    # Decode-mode shapes are fixed while the batch size is (see PaddockLlamaModel.forward), so
    # this compiles once per batch size; "freezing" lets inductor pre-pack the frozen weights
    # for oneDNN's matmuls, which is most of the gain on a CPU.
    if getattr(model, "_paddock_compiled_step", None) is None:
        model._paddock_compiled_step = torch.compile(model, options={"freezing": True})
    return model._paddock_compiled_step


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


def generate_from_tokens(
    model, prompts: list[list[int]], cfg: SamplingConfig, tokenizer=None
) -> GenerationOutput:
    """`generate` for prompts given as token lists of different lengths."""
    input_ids, attention_mask = left_pad(prompts, cfg.pad_token_id)
    device = model.get_input_embeddings().weight.device
    return generate(model, input_ids.to(device), attention_mask.to(device), cfg, tokenizer)


def chat(model, tokenizer, conversations: list[list[dict]], cfg: SamplingConfig | None = None) -> list[str]:
    """Answer each conversation (a list of role/content messages) with the tokenizer's chat template."""
    cfg = cfg or SamplingConfig(temperature=0)
    if not cfg.eos_token_ids:
        cfg.eos_token_ids = tuple(i for i in [tokenizer.eos_token_id] if i is not None)
        cfg.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [
        list(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False))
        for c in conversations
    ]
    out = generate_from_tokens(model, prompts, cfg, tokenizer)
    return [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip()
        for ids, mask in zip(out.responses, out.response_mask, strict=True)
    ]
