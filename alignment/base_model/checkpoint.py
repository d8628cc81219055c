"""Checkpoint I/O: validate and load HF Llama checkpoints (single or sharded safetensors), save in
the HF layout atomically, and import GGUF files.

Checks run before any weight is read, so a bad checkpoint fails in a second with a message naming
the file and the fix instead of a transformers traceback or, worse, a silently random-initialised
layer. Only safetensors are read: pickled `.bin` weights can run code when loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from alignment.base_model.modeling import HEADS
from alignment.errors import PaddockError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".paddock-complete"
SUPPORTED_MODEL_TYPES = ("llama",)
HEAD_KEYS = {
    "causal_lm": ("lm_head.weight",),
    "reward": ("score.weight",),
    "value": ("score.weight", "score.bias"),
}
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise PaddockError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def read_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise PaddockError(f"{path}: no config.json; expected a Hugging Face checkpoint directory")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PaddockError(f"{config_file}: not valid JSON ({err})") from None
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        arch = ", ".join(config.get("architectures") or []) or "unknown architecture"
        raise PaddockError(
            f"{config_file}: model_type {model_type!r} ({arch}) is not a Llama-family model; "
            f"Paddock's base model supports {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return config


def safetensors_header(file: Path) -> dict:
    """The tensor table of a safetensors file, after checking the file is whole."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise PaddockError(f"{file}: truncated or not a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, 100_000_000):
            raise PaddockError(f"{file}: corrupt safetensors header (claims {header_len} bytes)")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PaddockError(f"{file}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise PaddockError(f"{file}: corrupt safetensors header (not a table of tensors)")
    header.pop("__metadata__", None)
    try:
        data_end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    except (KeyError, TypeError, IndexError):
        raise PaddockError(f"{file}: corrupt safetensors header (bad tensor entry)") from None
    if 8 + header_len + data_end != size:
        raise PaddockError(
            f"{file}: truncated or corrupt ({size} bytes on disk, "
            f"header describes {8 + header_len + data_end})"
        )
    return header


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError, AttributeError):
            raise PaddockError(f"{index}: not a valid safetensors index (needs a weight_map)") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise PaddockError(f"{index}: shard(s) missing: {', '.join(missing)}")
        return [path / s for s in shards]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        raise PaddockError(
            f"{path}: only pickled .bin/.pt weights found; Paddock reads safetensors only. Convert with "
            "transformers: AutoModelForCausalLM.from_pretrained(path).save_pretrained(out)"
        )
    raise PaddockError(f"{path}: no model.safetensors or model.safetensors.index.json")


def check_weights_match(path: Path, model_cls, config) -> None:
    """Compare tensor names and shapes on disk with what the config builds, before loading."""
    on_disk: dict[str, tuple[Path, list[int]]] = {}
    for file in weight_files(path):
        for name, entry in safetensors_header(file).items():
            on_disk[name] = (file, entry["shape"])
    with torch.device("meta"):
        expected = {name: list(p.shape) for name, p in model_cls(config).state_dict().items()}
    optional = {k for keys in HEAD_KEYS.values() for k in keys}
    for name, shape in expected.items():
        if name not in on_disk:
            if name in optional:
                continue
            raise PaddockError(
                f"{path}: weight {name} missing from the checkpoint (config.json and weights disagree)"
            )
        file, disk_shape = on_disk[name]
        if disk_shape != shape:
            raise PaddockError(
                f"{file}: {name} has shape {disk_shape} but config.json implies {shape}; "
                "weights and config do not match"
            )
    extra = sorted(set(on_disk) - set(expected) - optional)
    if extra:
        raise PaddockError(
            f"{path}: {len(extra)} weight(s) the config does not use, e.g. {extra[0]}; "
            "weights and config do not match"
        )


def load_checkpoint(
    path: str | Path,
    head: str = "causal_lm",
    dtype="float32",
    device="cpu",
    trust_remote_code: bool = False,
    quantization_config=None,
):
    """Load a local HF Llama-family checkpoint into Paddock's model with the requested head."""
    from transformers import LlamaConfig

    if head not in HEADS:
        raise PaddockError(f"unknown head {head!r}; use one of {', '.join(HEADS)}")
    path = Path(path)
    if not path.exists():
        raise PaddockError(f"{path}: no such checkpoint directory")
    raw = read_config(path)
    config = LlamaConfig.from_pretrained(path)
    model_cls = HEADS[head]
    if "quantization_config" not in raw:
        check_weights_match(path, model_cls, config)
    extra = {"quantization_config": quantization_config} if quantization_config is not None else {}
    if torch.device(device).type != "cpu":  # weights go from the file to the GPU, not via a CPU copy
        extra["device_map"] = {"": str(device)}
    model, info = model_cls.from_pretrained(
        path,
        config=config,
        dtype=resolve_dtype(dtype),
        output_loading_info=True,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,  # never the pickled .bin fallback (checked above only without quantization)
        **extra,
    )
    if head != "causal_lm" and any(k in HEAD_KEYS[head] for k in info["missing_keys"]):
        log.info("%s: no %s head in the checkpoint; initialised a new one", path, head)
    return model if quantization_config is not None else model.to(device)


def publish_dir(tmp: Path, final: Path) -> Path:
    """Atomically move a finished temp dir into place. If another process published first, keep
    theirs (it is complete too: only finished dirs are ever renamed) and discard ours."""
    tmp.chmod(0o755)  # mkdtemp makes it private; a model cache is meant to be shared
    (tmp / COMPLETE_MARKER).write_text("ok\n")
    try:
        os.rename(tmp, final)
    except OSError:
        # `final` already exists: a concurrent writer won the race.
        shutil.rmtree(tmp, ignore_errors=True)
    if not (final / COMPLETE_MARKER).is_file():
        raise PaddockError(f"{final}: exists but is not a complete Paddock checkpoint; remove it and retry")
    return final


def save_checkpoint(model, path: str | Path, tokenizer=None) -> Path:
    """Write the HF layout (config.json, safetensors, tokenizer) atomically: temp dir, then rename."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if final.exists():
            shutil.rmtree(final)
        return publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a Llama GGUF file through transformers and save it as an HF safetensors checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise PaddockError(f"{gguf_file}: no such GGUF file")
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
        if model.config.model_type not in SUPPORTED_MODEL_TYPES:
            raise PaddockError(f"{gguf_file}: architecture {model.config.model_type!r} is not Llama-family")
        # The weights are dequantised now, but transformers refuses to save a model it loaded from
        # GGUF; re-home them in Paddock's class with the GGUF quantization_config dropped.
        settings = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
        settings["_name_or_path"] = str(final)
        ours = HEADS["causal_lm"](LlamaConfig.from_dict(settings))
        ours.load_state_dict(model.state_dict(), strict=True)
        ours.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        return publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
