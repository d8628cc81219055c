"""The PPO memory function (alignment/memory.py) on hand-worked numbers, and its SmolLM2 figure
against the peak memory measured by benchmarks/ppo_memory.py."""

from __future__ import annotations

import json

import pytest

from alignment.memory import LLAMA2_7B, SMOLLM2_135M, LlamaShape, ppo_memory_bytes, ppo_memory_gb
from tests.test_pipeline import REPO

TOY = LlamaShape(params=1000, hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1)


def test_lora_parameters_hand_worked():
    """kv width = 8 / 2 heads * 1 kv head = 4. Rank 1, per layer: q 8+8, k 8+4, v 8+4, o 8+8,
    gate 8+16, up 8+16, down 16+8 = 16+12+12+16+24+24+24 = 128; two layers: 256."""
    assert TOY.lora_params(1) == 256
    assert TOY.lora_params(2, targets=("q_proj",)) == 2 * 2 * 16


def test_ppo_memory_hand_worked():
    """LoRA r=1 at bf16-autocast: RMs 2 x 1000 x 2 B = 4000; base 1000 x 4 B (fp32 masters) =
    4000; two adapters of 256 fp32 weights with gradient and two moments: 2 x 256 x 16 = 8192; the
    bf16 sampling copy 2000. Full fine-tuning: policy and critic 1000 x (4 + 12) = 16000 each, a bf16
    reference 2000, the RMs 4000. Under `bf16` trained weights take 2 B."""
    assert ppo_memory_bytes(TOY, 1) == {
        "reward_models": 4000, "base": 4000, "adapters": 8192, "sampling_copy": 2000,
    }  # fmt: skip
    assert ppo_memory_bytes(TOY, None) == {
        "reward_models": 4000, "policy": 16000, "critic": 16000, "reference": 2000,
    }  # fmt: skip
    assert ppo_memory_bytes(TOY, None, precision="bf16")["policy"] == 14000
    assert ppo_memory_bytes(TOY, 1, precision="fp32")["reward_models"] == 8000
    # PPO is data parallel under every config: FSDP2 does not shard it
    assert ppo_memory_bytes(TOY, 1, engine="fsdp2") == ppo_memory_bytes(TOY, 1)
    with pytest.raises(ValueError, match="engine"):
        ppo_memory_bytes(TOY, 1, engine="zero3")


def test_the_parameter_counts_are_the_real_models():
    """SmolLM2-135M from its config: embeddings 49152 x 576 (tied), 30 layers of attention (q, o
    576^2; k, v 576 x 192), MLP (3 x 576 x 1536) and two norms, and the final norm."""
    per_layer = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576
    assert SMOLLM2_135M.params == 49152 * 576 + 30 * per_layer + 576
    assert LLAMA2_7B.params == 6_738_415_616  # Llama-2-7B's published count


def test_smollm2_prediction_against_the_measured_peak():
    """benchmarks/ppo_memory.py measures each process's peak resident memory on a short SmolLM2
    PPO run (2 processes, LoRA r=16, bf16 autocast). That peak holds the model state the function
    predicts, plus the runtime (Python and the libraries, measured alone) and what loading leaves
    behind. The prediction must fit under the measured peak less the runtime, and explain at least
    half of it: an accounting that lost a model, or counted one twice, falls outside."""
    measured = json.loads((REPO / "benchmarks/ppo_memory.json").read_text())
    peak = sum(measured["peak_rss_gb"]) / len(measured["peak_rss_gb"])
    explained = peak - measured["runtime_rss_gb"]
    predicted = ppo_memory_gb(SMOLLM2_135M, 16)["total"]
    assert 0.5 * explained <= predicted <= explained, (predicted, explained)
