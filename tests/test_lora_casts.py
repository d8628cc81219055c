"""LoRA under bf16 autocast without PEFT's cast of each adapter input to fp32 (model_setup
.skip_adapter_input_casts): the same numbers, forward and every gradient, with fewer copies."""

from __future__ import annotations

import pytest
import torch

from alignment.model_setup import build_trainable, skip_adapter_input_casts
from alignment.precision import bf16_autocast
from alignment.recipes.schema import LoraConfig, ModelConfig
from tests.test_pipeline import tiny_checkpoint  # noqa: F401  (fixture)


def loss_and_grads(model, ids):
    model.zero_grad()
    with bf16_autocast(model):
        logits = model(input_ids=ids).logits
    loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_adapters_give_the_same_loss_and_gradients_without_the_input_casts(tiny_checkpoint, dropout):  # noqa: F811
    """bf16 -> fp32 -> bf16 is exact, so the adapters' rank-r matmuls see the same bf16 input either
    way: loss and every adapter gradient agree bit for bit (dropout: the same seeded mask, applied
    in bf16 instead of fp32, may round its 1/(1-p) scaling once, hence the small tolerance)."""
    config = ModelConfig(
        name_or_path=str(tiny_checkpoint),
        precision="bf16-autocast",
        device="cpu",
        lora=LoraConfig(r=4, alpha=8, dropout=dropout),
    )
    model = build_trainable(config, str(tiny_checkpoint))
    lora_layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert lora_layers and not any(m.cast_input_dtype_enabled for m in lora_layers)
    for module in model.modules():  # start every adapter away from zero, so its gradients are too
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.1)
    model.train()
    ids = torch.randint(3, 1000, (2, 12))
    torch.manual_seed(0)
    skipped_loss, skipped = loss_and_grads(model, ids)
    for module in lora_layers:
        module.cast_input_dtype_enabled = True
    torch.manual_seed(0)
    cast_loss, cast = loss_and_grads(model, ids)
    assert skipped.keys() == cast.keys() and len(skipped) == 2 * len(lora_layers)
    tolerance = 0 if dropout == 0 else 1e-2
    torch.testing.assert_close(skipped_loss, cast_loss, rtol=tolerance, atol=tolerance)
    for name in cast:
        assert cast[name].abs().sum() > 0, name
        torch.testing.assert_close(skipped[name], cast[name], rtol=tolerance, atol=tolerance * 1e-2)
    skip_adapter_input_casts(model)
    assert not any(m.cast_input_dtype_enabled for m in lora_layers)


def test_fp32_lora_keeps_the_casts(tiny_checkpoint):  # noqa: F811
    """Without autocast nothing is skipped: PEFT's casts are what keeps mixed dtypes working there."""
    config = ModelConfig(
        name_or_path=str(tiny_checkpoint), precision="fp32", device="cpu", lora=LoraConfig(r=4)
    )
    model = build_trainable(config, str(tiny_checkpoint))
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
