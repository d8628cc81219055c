"""A preallocated key/value cache: one [B, K, max_len, D] buffer per layer, written in place.

Allocating once keeps decoding free of per-step concatenation and gives `torch.compile` fixed
shapes. All rows share one write position because prompts are left-padded to a common length.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_len = max_len

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int) -> KVCache:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        # The embedding, not the first parameter: under PEFT that may be an fp32 adapter weight.
        param = model.get_input_embeddings().weight
        dtype = param.dtype if param.dtype.is_floating_point else torch.float32
        if torch.is_autocast_enabled(param.device.type):  # keys/values come out of bf16 matmuls
            dtype = torch.get_autocast_dtype(param.device.type)
        return cls(
            config.num_hidden_layers,
            batch_size,
            config.num_key_value_heads,
            max_len,
            head_dim,
            dtype,
            param.device,
        )

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int | torch.Tensor):
        """Write k, v [B, K, T, D] at positions start..start+T; return the whole buffers
        [B, K, max_len, D]. Positions not yet written are hidden by the causal mask."""
        k, v = k.to(self.keys[layer].dtype), v.to(self.values[layer].dtype)
        if isinstance(start, torch.Tensor):  # decode mode: one position, given as a tensor
            self.keys[layer].index_copy_(2, start.view(1), k)
            self.values[layer].index_copy_(2, start.view(1), v)
            return self.keys[layer], self.values[layer]
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked to write up to {end}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer], self.values[layer]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the given batch rows (e.g. drop finished sequences)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
