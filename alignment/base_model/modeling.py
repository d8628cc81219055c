"""The Llama architecture, written to be read top to bottom.

Paddock's own model: RMSNorm, rotary embeddings (default, linear and llama3 scaling), SwiGLU MLP,
grouped-query attention through `scaled_dot_product_attention`, and three heads (causal LM, scalar
reward, per-token value). The same code runs the Llama-like families in families.py (Mistral's
sliding window, Qwen2's q/k/v biases, Qwen3's query/key norms), each configured by its own
transformers config and using transformers' weight names, so a checkpoint saved here loads in
`transformers.AutoModelForCausalLM` / `<Family>ForSequenceClassification` and the reverse, and TRL,
PEFT, bitsandbytes and accelerate treat these models like transformers' own.

Shape letters in comments: B batch, T new tokens, S keys (cached + new), H query heads,
K key/value heads, D head dim, C hidden size, V vocabulary.

Two deliberate differences from transformers' forward:
- Positions default to `cumsum(attention_mask) - 1`, so a left-padded row gets the same positions
  (and the same outputs) as the unpadded row; transformers uses 0..T-1 unless told otherwise.
- The reward head pools at the last position where `attention_mask` is 1, which stays right when
  the pad token equals EOS; transformers looks for the last token that differs from the pad id.

One addition: packed input. `sequence_lengths=[...]` with input_ids [1, N] runs several sequences
back to back in one row without padding (positions restart and attention stays within each
sequence; see alignment/base_model/packing.py); the reward head then returns one score per sequence. The
reward-model stage trains this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, LlamaConfig, PreTrainedModel
from transformers import initialization as hf_init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.utils import ModelOutput

from alignment.base_model import families, kernels
from alignment.base_model.kv_cache import KVCache
from alignment.base_model.packing import Packing, as_packing

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalised in fp32 whatever the input precision: bf16 sums of squares lose too much.
        out = kernels.rms_norm(x, self.weight, self.eps)
        if torch.is_autocast_enabled(out.device.type):
            # Cast once here: autocast would otherwise cast (and keep for backward) a separate
            # copy for each linear reading this output (q, k, v; gate, up).
            out = out.to(torch.get_autocast_dtype(out.device.type))
        return out


def rope_inverse_frequencies(config: LlamaConfig) -> torch.Tensor:
    """Per-pair rotation speeds [D/2] for the config's rope type (default, linear, llama3)."""
    params = dict(config.rope_parameters or {})
    rope_type = params.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported; use one of {SUPPORTED_ROPE_TYPES}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    base = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if rope_type == "linear":
        # Stretching positions by `factor` is the same as slowing every frequency by it.
        return inv_freq / params["factor"]
    if rope_type == "llama3":
        return llama3_scaled(inv_freq, params)
    return inv_freq


def llama3_scaled(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    """Llama 3.1 scaling: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between."""
    factor = params["factor"]
    low_freq_factor = params["low_freq_factor"]
    high_freq_factor = params["high_freq_factor"]
    old_context = params["original_max_position_embeddings"]
    low_freq_wavelen = old_context / low_freq_factor
    high_freq_wavelen = old_context / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    ramped = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    in_between = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(in_between, ramped, scaled)


class RotaryEmbedding(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", rope_inverse_frequencies(config), persistent=False)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids [B, T] -> cos, sin [B, T, D]; angles in fp32 so long positions stay exact.
        angles = position_ids[..., None].float() * self.inv_freq.float()
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


class SwiGLU(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act {config.hidden_act!r} is not supported; Llama uses 'silu'")
        bias = getattr(config, "mlp_bias", False)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(kernels.swiglu(self.gate_proj(x), self.up_proj(x)))


class Attention(nn.Module):
    """Multi-head, grouped-query or multi-query attention, chosen by num_key_value_heads."""

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.window = families.layer_windows(config)[layer_idx]
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        qkv_bias, o_bias = families.projection_biases(config)
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=o_bias)
        if families.family_of(config).qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, kv_cache: KVCache | None = None, cache_start: int = 0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):  # Qwen3: each head normalised before the rotation
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, T, D], [B, K, T, D]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = kernels.apply_rope(q, cos, sin), kernels.apply_rope(k, cos, sin)
        if isinstance(mask, Packing):
            return self.o_proj(mask.attention(q, k, v, self.window))
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v, cache_start)  # [B, K, S, D]
        if mask is None:
            # Unpadded, uncached (training): SDPA's own causal masking saves building, casting
            # and storing a [B, 1, T, S] mask per layer for the backward pass.
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=self.n_kv_heads != self.n_heads
            )
        elif T == 1:
            out = decode_attention(q, k, v, mask)
        elif self.n_kv_heads != self.n_heads:
            out = grouped_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


def grouped_attention(q, k, v, mask):
    """GQA/MQA without copying K/V: the query heads sharing one K/V head are stacked along the
    query axis, so each K/V head is read once. (repeat_interleave would materialise H/K copies of
    the cache every step, the main memory traffic of decoding.)

    q [B, H, T, D], k/v [B, K, S, D], mask [B, 1, T, S] -> [B, H, T, D]. Head h uses K/V head
    h // (H/K), the same grouping as transformers' repeat_kv.
    """
    B, H, T, D = q.shape
    K, S = k.shape[1], k.shape[2]
    group = H // K
    q = q.reshape(B, K, group * T, D)  # rows ordered (head in group, position)
    mask = mask.expand(B, 1, T, S)[:, :, None].expand(B, 1, group, T, S).reshape(B, 1, group * T, S)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, K, group*T, D]
    return out.reshape(B, H, T, D)


def decode_attention(q, k, v, mask):
    """One new token per row: q [B, H, 1, D], k/v [B, K, S, D], mask [B, 1, 1, S] -> [B, H, 1, D].

    Two batched matmuls and a softmax; for a single query SDPA's CPU flash kernel took twice as
    long (measured at B=128, S=100 on SmolLM2's shapes). Scores are softmaxed in fp32.
    """
    B, H, _, D = q.shape
    K = k.shape[1]
    q = q.reshape(B, K, H // K, D)  # query heads grouped under their K/V head
    scores = (q @ k.transpose(-1, -2)).float() * D**-0.5  # [B, K, H/K, S]
    scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(-1).to(v.dtype) @ v  # [B, K, H/K, D]
    return out.reshape(B, H, 1, D)


class DecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = SwiGLU(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, kv_cache=None, cache_start=0):
        if isinstance(mask, dict):  # one mask per attention window (sliding-window families)
            mask = mask[self.self_attn.window]
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, cache_start)
        return x + self.mlp(self.post_attention_layernorm(x))


def attention_mask_4d(
    padding_mask: torch.Tensor | None, B: int, T: int, start: int, S: int, device, window: int | None = None
):
    """Boolean [B, 1, T, S] mask for queries at absolute positions start..start+T-1 over S keys:
    a query sees keys at or before itself that are not padding, and with a sliding `window` only
    the keys fewer than `window` positions back. Keys past the last written one (an unfilled KV
    cache) are excluded by causality.

    Each query always sees itself, so a padding query never has an empty row (SDPA would return NaN);
    its output is meaningless and ignored downstream.
    """
    query_index = torch.arange(start, start + T, device=device)[:, None]  # [T, 1]
    key_index = torch.arange(S, device=device)[None, :]  # [1, S]
    causal = key_index <= query_index  # [T, S]
    if window is not None:
        causal = causal & (key_index > query_index - window)
    if padding_mask is None:
        return causal[None, None].expand(B, 1, T, S)
    padding_mask = padding_mask[:, :S].bool()
    if padding_mask.shape[1] < S:
        padding_mask = F.pad(padding_mask, (0, S - padding_mask.shape[1]))
    visible = causal[None] & padding_mask[:, None, :]  # [B, T, S]
    visible = visible | (key_index == query_index)[None]
    return visible[:, None]


def positions_from_mask(padding_mask: torch.Tensor | None, B: int, T: int, S: int, device) -> torch.Tensor:
    """Position ids [B, T] for the last T of S tokens: count of real tokens before each one."""
    if padding_mask is None:
        return torch.arange(S - T, S, device=device)[None].expand(B, T)
    return (padding_mask.long().cumsum(-1) - 1).clamp(min=0)[:, S - T : S]


class PaddockPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    config: LlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        # Non-persistent buffers are not in checkpoints, and from_pretrained builds on the meta
        # device, so the rope frequencies are recomputed here.
        if isinstance(module, RotaryEmbedding):
            hf_init.copy_(module.inv_freq, rope_inverse_frequencies(module.config))

    def get_input_embeddings(self):
        return self.model.embed_tokens  # every head wraps the decoder as `self.model`

    def _save_as(self, architecture: str, **config_updates) -> None:
        # Record transformers' class name so plain `AutoModel*` users, vLLM and other tools know
        # the family and the head.
        self._architecture = architecture
        self.config.architectures = [architecture]
        for key, value in config_updates.items():
            setattr(self.config, key, value)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes the saving class's own name into config.json; "PaddockLlamaFor..."
        # means nothing to vLLM or to anyone without Paddock, so the family's name replaces it.
        super().save_pretrained(save_directory, *args, **kwargs)
        written = kwargs.get("is_main_process", True) and (Path(save_directory) / "config.json").is_file()
        if hasattr(self, "_architecture") and written:
            self.config.architectures = [self._architecture]
            self.config.save_pretrained(save_directory)


class PaddockLlamaModel(PaddockPreTrainedModel):
    """Embeddings, decoder stack and final norm: token ids [B, T] -> hidden states [B, T, C]."""

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        self.windows = sorted({w for w in families.layer_windows(config) if w is not None})
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def _masks(self, full, keys: int, windowed):
        """What each layer reads as its mask: `full` when no layer slides, else {window: mask}
        (None for the full-attention layers). A window at least as long as the keys hides nothing,
        so short inputs keep the full mask (and unpadded training keeps SDPA's causal path)."""
        if not self.windows:
            return full
        return {None: full} | {w: full if keys <= w else windowed(w) for w in self.windows}

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        cache_start: int = 0,
        sequence_lengths=None,
        **_unused,
    ) -> BaseModelOutputWithPast:
        """attention_mask [B, S] covers cached and new tokens (S = cache_start + T); 1 = real token.

        Decode mode, for the generation engine: `cache_start` a 0-dim tensor, one new token per
        row, attention_mask [B, kv_cache.max_len] with the new token's slot set and later slots 0.
        Every shape is then the same from step to step, so a compiled step never recompiles.

        Packed mode: `sequence_lengths` (a list, or a `Packing`) with a single row [1, N],
        N = sum(sequence_lengths), and no attention_mask, position_ids or cache.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [B, T, C]
        B, T, _ = x.shape
        if isinstance(cache_start, torch.Tensor):
            position_ids = attention_mask.sum(-1, keepdim=True) - 1  # [B, 1]
            cos, sin = self.rotary_emb(position_ids, x.dtype)
            mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, max_len]
            slots = mask.shape[-1]
            mask = self._masks(
                mask, slots, lambda w: mask & (torch.arange(slots, device=x.device) > cache_start - w)
            )
            for layer in self.layers:
                x = layer(x, cos, sin, mask, kv_cache, cache_start)
            return BaseModelOutputWithPast(last_hidden_state=self.norm(x))
        if sequence_lengths is not None:
            return self._forward_packed(x, attention_mask, position_ids, kv_cache, sequence_lengths)
        S = cache_start + T  # tokens so far
        if attention_mask is not None and attention_mask.shape[-1] < S:
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} tokens, need {S}")
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, B, T, S, x.device)
        cos, sin = self.rotary_emb(position_ids, x.dtype)
        # With a cache, attend over its whole preallocated length: the buffer is contiguous, so
        # the attention matmuls read it in place instead of copying a [:S] slice every step.
        keys = kv_cache.max_len if kv_cache is not None else S
        mask = None
        if attention_mask is not None or kv_cache is not None:
            mask = attention_mask_4d(attention_mask, B, T, cache_start, keys, x.device)
        mask = self._masks(
            mask, keys, lambda w: attention_mask_4d(attention_mask, B, T, cache_start, keys, x.device, w)
        )
        for layer in self.layers:
            x = layer(x, cos, sin, mask, kv_cache, cache_start)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x))

    def _forward_packed(self, x, attention_mask, position_ids, kv_cache, sequence_lengths):
        packing = as_packing(sequence_lengths, x.device)
        if x.shape[0] != 1 or x.shape[1] != packing.total:
            raise ValueError(
                f"packed input must be one row of sum(sequence_lengths) = {packing.total} tokens, "
                f"got {list(x.shape[:2])}"
            )
        if attention_mask is not None or position_ids is not None or kv_cache is not None:
            raise ValueError(
                "sequence_lengths (packed input) excludes attention_mask, position_ids and kv_cache"
            )
        cos, sin = self.rotary_emb(packing.positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, packing)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x))


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy from full logits; labels -100 are ignored. Mean over counted
    tokens, or over `num_items_in_batch` when the Trainer passes it (exact gradient accumulation)."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    return total / num_items_in_batch


def fused_causal_lm_loss(
    hidden: torch.Tensor, lm_head: nn.Linear, labels: torch.Tensor, num_items_in_batch=None
):
    """The same loss straight from hidden states [B, T, C]: the LM head and the cross-entropy walk
    the tokens in chunks, so the [B*T, V] logits (and their gradient) never exist at once."""
    hidden, targets = hidden[:, :-1], labels[:, 1:].to(hidden.device)
    if num_items_in_batch is None:
        return kernels.fused_linear_cross_entropy(hidden, lm_head.weight, targets, lm_head.bias)
    total = kernels.fused_linear_cross_entropy(hidden, lm_head.weight, targets, lm_head.bias, reduction="sum")
    return total / num_items_in_batch


class PaddockLlamaForCausalLM(PaddockPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = PaddockLlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.fused_loss = True
        self._save_as(families.architecture(config, "causal_lm"))
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        kv_cache: KVCache | None = None,
        cache_start: int = 0,
        logits_to_keep: int = 0,
        num_items_in_batch=None,
        **_unused,
    ) -> CausalLMOutputWithPast:
        hidden = self.model(input_ids, attention_mask, position_ids, inputs_embeds, kv_cache, cache_start)
        hidden = hidden.last_hidden_state  # [B, T, C]
        # A plain nn.Linear head (not LoRA-wrapped or quantised) can fuse into the loss; the
        # logits are then not returned. Set `model.fused_loss = False` to get both.
        if labels is not None and self.fused_loss and type(self.lm_head) is nn.Linear:
            return CausalLMOutputWithPast(
                loss=fused_causal_lm_loss(hidden, self.lm_head, labels, num_items_in_batch)
            )
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)  # [B, T, V]
        loss = None if labels is None else causal_lm_loss(logits, labels, num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=logits)


def last_token_index(attention_mask, input_ids, pad_token_id, B: int, T: int, device) -> torch.Tensor:
    """[B] index of each row's last real token (works for left and right padding)."""
    if attention_mask is not None:
        real = attention_mask[:, -T:].bool()
    elif input_ids is not None and pad_token_id is not None:
        real = input_ids != pad_token_id
    else:
        return torch.full((B,), T - 1, device=device)
    positions = torch.arange(T, device=device).expand(B, T)
    return torch.where(real, positions, -1).amax(-1).clamp(min=0)


class PaddockLlamaForReward(PaddockPreTrainedModel):
    """Scalar reward r(x, y) read at the last real token; `logits` [B, 1] like a 1-label
    sequence classifier, so the checkpoint is a transformers `LlamaForSequenceClassification`
    (or its family's)."""

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = PaddockLlamaModel(config)
        self.score = nn.Linear(config.hidden_size, 1, bias=False)
        self._save_as(families.architecture(config, "reward"), num_labels=1)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        sequence_lengths=None,
        **_unused,
    ) -> SequenceClassifierOutputWithPast:
        if sequence_lengths is not None:
            # Packed: one row [1, N] of sequences back to back; one reward per sequence.
            packing = as_packing(sequence_lengths, self.model.embed_tokens.weight.device)
            hidden = self.model(
                input_ids, attention_mask, position_ids, inputs_embeds, sequence_lengths=packing
            ).last_hidden_state
            return SequenceClassifierOutputWithPast(logits=self.score(hidden[0, packing.ends]))  # [B, 1]
        hidden = self.model(input_ids, attention_mask, position_ids, inputs_embeds).last_hidden_state
        B, T, _ = hidden.shape
        last = last_token_index(attention_mask, input_ids, self.config.pad_token_id, B, T, hidden.device)
        pooled = hidden[torch.arange(B, device=hidden.device), last]  # [B, C]
        return SequenceClassifierOutputWithPast(logits=self.score(pooled))  # [B, 1]


@dataclass
class ValueOutput(ModelOutput):
    values: torch.Tensor | None = None  # [B, T]


class PaddockLlamaForValue(PaddockPreTrainedModel):
    """Per-token value V(s_t) for the PPO critic, saved as a 1-label `LlamaForTokenClassification`
    (or its family's).
    Uses the reward head's `score` weight name, so a critic initialises directly from a reward
    model (its bias, absent there, starts at zero)."""

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = PaddockLlamaModel(config)
        self.score = nn.Linear(config.hidden_size, 1, bias=True)
        self._save_as(families.architecture(config, "value"), num_labels=1)
        self.post_init()

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, **_unused
    ) -> ValueOutput:
        hidden = self.model(input_ids, attention_mask, position_ids, inputs_embeds).last_hidden_state
        return ValueOutput(values=self.score(hidden).squeeze(-1))


HEADS = {
    "causal_lm": PaddockLlamaForCausalLM,
    "reward": PaddockLlamaForReward,
    "value": PaddockLlamaForValue,
}
