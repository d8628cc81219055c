"""Memory one process holds for the PPO stage, from the model's shape: the model state that lives for
the whole stage (weights, gradients, AdamW moments, frozen copies), by component.

What the PPO stage keeps (alignment/stages/ppo.py, alignment/rl/):
- LoRA with a shared base: one trainable base model in the training precision, two adapters
  (policy "default", critic "critic") each with fp32 gradients and two fp32 AdamW moments, the
  reference = the base with adapters off (free), a merged sampling copy in bf16 (`merged_sampling`)
  and both reward models, frozen.
- Full fine-tuning: the policy and a critic model of its own, each with weights, fp32 gradients and
  two fp32 AdamW moments; a frozen reference; both reward models; no sampling copy.
Frozen models keep bf16 weights under either bf16 precision (alignment/model_setup.py).

PPO is data parallel under every launcher config, FSDP2 included: its fused log-prob kernel reads
the policy's inner modules and the policy and critic adapters share one base, so a sharding wrapper
sees neither (docs/distributed.md). Each process therefore holds all of it, whatever the number of
processes; the engine argument exists so the table says so rather than assuming.

Not counted: activations and the KV cache (they scale with rollout and minibatch sizes, are freed
between phases, and are small next to the weights at the recipes' sizes), the allocator's slack and
the runtime itself (on a CPU, Python, torch and the libraries take about 0.5 GB per process).
"""

from __future__ import annotations

from dataclasses import dataclass

from alignment.base_model.families import LORA_TARGETS

GB = 1e9


@dataclass(frozen=True)
class LlamaShape:
    params: int  # every parameter, tied embeddings once
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int

    def projection(self, name: str) -> tuple[int, int]:
        """(in, out) features of a decoder layer's linear layer."""
        kv = self.hidden // self.heads * self.kv_heads
        return {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }[name]

    def lora_params(self, rank: int, targets=LORA_TARGETS) -> int:
        """One adapter: A (rank x in) and B (out x rank) on each target of every layer."""
        return self.layers * sum(rank * sum(self.projection(t)) for t in targets)


SMOLLM2_135M = LlamaShape(params=134_515_008, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3)
LLAMA2_7B = LlamaShape(
    params=6_738_415_616, hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32
)


def ppo_memory_bytes(
    shape: LlamaShape,
    lora_rank: int | None,
    precision: str = "bf16-autocast",
    engine: str = "ddp",
    reward_model: LlamaShape | None = None,
) -> dict[str, int]:
    """Per-process model state of the PPO stage in bytes, by component. `lora_rank` None: full
    fine-tuning. `reward_model`: the RMs' shape (default: the policy's). `engine` does not change
    the figure (module docstring)."""
    if engine not in ("ddp", "fsdp2"):
        raise ValueError(f"engine must be ddp or fsdp2, got {engine!r}")
    trained = 2 if precision == "bf16" else 4  # bytes per trained weight (fp32 masters otherwise)
    frozen = 2 if precision in ("bf16", "bf16-autocast") else 4
    state = 4 + 4 + 4  # per trained parameter: fp32 gradient and two AdamW moments
    rm = reward_model or shape
    parts = {"reward_models": 2 * rm.params * frozen}
    if lora_rank is not None:
        adapter = shape.lora_params(lora_rank)
        parts["base"] = shape.params * trained
        parts["adapters"] = 2 * adapter * (4 + state)  # PEFT keeps adapter weights in fp32
        parts["sampling_copy"] = shape.params * 2
    else:
        parts["policy"] = shape.params * (trained + state)
        parts["critic"] = shape.params * (trained + state)
        parts["reference"] = shape.params * frozen
    return parts


def ppo_memory_gb(shape: LlamaShape, lora_rank: int | None, **kwargs) -> dict[str, float]:
    """`ppo_memory_bytes` in GB, with the `total`."""
    parts = ppo_memory_bytes(shape, lora_rank, **kwargs)
    out = {name: round(size / GB, 2) for name, size in parts.items()}
    out["total"] = round(sum(parts.values()) / GB, 2)
    return out
