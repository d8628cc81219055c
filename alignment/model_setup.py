"""Build the model a stage trains, from the recipe's ModelConfig: precision, LoRA, QLoRA.

LoRA and QLoRA go through PEFT (and bitsandbytes for the 4-bit NF4 base) unchanged: Paddock's
model uses transformers' Llama weight names, so PEFT's Llama target modules apply as they are.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from alignment.base_model import load_model, save_checkpoint
from alignment.base_model.loading import resolve
from alignment.errors import PaddockError
from alignment.placement import resolve_device

ADAPTER_BASE_FILE = "paddock_base.txt"  # where an adapter's base checkpoint lives

# Two messages every LoRA run printed that say nothing about it: bitsandbytes, imported by PEFT,
# reports on CPUs with AVX-512 BF16 that it could not fetch an optional hub kernel (Paddock
# downloads nothing at run time; QLoRA works without it), and PEFT reads a transformers property
# that transformers 5 has renamed. Only these two are silenced.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def weights_dtype(precision: str) -> torch.dtype:
    """Weights a trained model keeps: fp32 masters unless the recipe asks for bf16 weights."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def frozen_dtype(precision: str) -> torch.dtype:
    """Weights a read-only model keeps (reward models, a PPO reference, evaluated models): bf16 under
    either bf16 precision. Nothing updates them, so fp32 masters would only double their memory;
    under autocast their matmuls run in bf16 anyway."""
    return torch.bfloat16 if precision in ("bf16", "bf16-autocast") else torch.float32


def resolve_init(path_or_name: str) -> tuple[Path, Path | None]:
    """(checkpoint to load, adapter dir or None): a saved LoRA stage points at its base."""
    path = resolve(path_or_name)
    base_file = Path(path) / ADAPTER_BASE_FILE
    if not base_file.is_file():
        return Path(path), None
    if (Path(path) / "merged").is_dir():
        return Path(path) / "merged", None
    return Path(base_file.read_text().strip()), Path(path)


def apply_adapter(model, adapter: Path):
    """`model` with the LoRA adapter saved in `adapter` merged in. Only adapter_model.safetensors is
    read: without it peft would unpickle adapter_model.bin, or look the directory up on the hub."""
    weights = Path(adapter) / "adapter_model.safetensors"
    if not weights.is_file():
        raise PaddockError(
            f"{adapter}: no adapter_model.safetensors; Paddock reads LoRA adapters from safetensors only"
        )
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


def build_trainable(model_cfg, init: str, head: str = "causal_lm"):
    """Load `init` (a name, checkpoint or saved adapter) with the head, ready to train, on the
    recipe's device."""
    base_path, adapter = resolve_init(init)
    kwargs = {}
    if model_cfg.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = load_model(
        base_path,
        head=head,
        dtype=weights_dtype(model_cfg.precision),
        device=resolve_device(model_cfg.device),
        trust_remote_code=model_cfg.trust_remote_code,
        **kwargs,
    )
    if adapter is not None and model_cfg.lora is not None:
        raise PaddockError(
            f"{adapter} is a LoRA adapter without merged weights; set model.merge_lora: true so the "
            "next LoRA stage can start from the merged model"
        )
    if adapter is not None:
        # A full fine-tune on top of an adapter: fold the adapter into the base first.
        model = apply_adapter(model, adapter)
    if model_cfg.lora is None:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if model_cfg.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = model_cfg.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=["score"] if head != "causal_lm" else None,
    )
    model = get_peft_model(model, config)
    if model_cfg.precision == "bf16-autocast":
        skip_adapter_input_casts(model)
    return model


def skip_adapter_input_casts(model) -> None:
    """Under bf16 autocast, PEFT casts each adapter's bf16 input up to the adapters' fp32 and
    autocast casts it straight back down for the rank-r matmul: two copies of every projection's
    input per call that change no value (bf16 -> fp32 -> bf16 is exact). PEFT's own switch turns
    the first copy off; outside autocast an fp32 model's inputs are fp32 already, so nothing is
    cast either way."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False


def save_trained(model, tokenizer, out: Path, base_path: Path | None, merge: bool) -> Path:
    """Full models are saved in the HF layout; LoRA models as an adapter that names its base
    (plus merged weights under `merged/` when asked)."""
    if not hasattr(model, "peft_config"):
        return save_checkpoint(model, out, tokenizer)
    if base_path is None:
        raise PaddockError("saving an adapter needs its base checkpoint path")
    import shutil
    import tempfile

    from alignment.base_model.checkpoint import replace_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ADAPTER_BASE_FILE).write_text(str(base_path) + "\n")
        if merge:
            save_checkpoint(model.merge_and_unload(), tmp / "merged", tokenizer)
        return replace_dir(tmp, out)  # refuses to delete files no Paddock save wrote
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_frozen(model_cfg, init: str, head: str = "causal_lm", dtype: torch.dtype | None = None):
    """A model that is only read (reward models, a PPO reference): adapters merged, no gradients, on
    the recipe's device."""
    base_path, adapter = resolve_init(init)
    model = load_model(
        base_path,
        head=head,
        dtype=dtype or frozen_dtype(model_cfg.precision),
        device=resolve_device(model_cfg.device),
        trust_remote_code=model_cfg.trust_remote_code,
    )
    if adapter is not None:
        model = apply_adapter(model, adapter)
    model.requires_grad_(False)
    return model.eval()
