"""Checkpoint I/O: validate and load HF checkpoints (single or sharded safetensors) and save in the
HF layout atomically. GGUF import is in gguf_import.py.

Checks run before any weight is read, so a bad checkpoint fails in a second with a message naming
the file and the fix instead of a transformers traceback or, worse, a silently random-initialised
layer. Only safetensors are read: pickled `.bin` weights can run code when loaded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path

import torch

from alignment.base_model.families import read_config
from alignment.base_model.modeling import HEADS
from alignment.errors import PaddockError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".paddock-complete"
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
    """Load a local HF checkpoint of a supported family into Paddock's model with the requested head."""
    from transformers import AutoConfig

    if head not in HEADS:
        raise PaddockError(f"unknown head {head!r}; use one of {', '.join(HEADS)}")
    path = Path(path)
    if not path.exists():
        raise PaddockError(f"{path}: no such checkpoint directory")
    raw = read_config(path)
    config = AutoConfig.from_pretrained(path)  # the family's own config class
    model_cls = HEADS[head]
    if "quantization_config" not in raw:
        check_weights_match(path, model_cls, config)
    extra = {"quantization_config": quantization_config} if quantization_config is not None else {}
    if torch.device(device).type != "cpu":  # weights go from the file to the GPU, not via a CPU copy
        extra["device_map"] = {"": str(device)}
    with held_load_report() as report:
        model, info = model_cls.from_pretrained(
            path,
            config=config,
            dtype=resolve_dtype(dtype),
            output_loading_info=True,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,  # never the pickled .bin fallback (checked above only without quantization)
            **extra,
        )
        if not only_heads_paddock_handles(head, info):
            report.release()
    if head != "causal_lm" and any(k in HEAD_KEYS[head] for k in info["missing_keys"]):
        log.info("%s: no %s head in the checkpoint; initialised a new one", path, head)
    return model if quantization_config is not None else model.to(device)


def only_heads_paddock_handles(head: str, info: dict) -> bool:
    """Whether transformers' loading info lists nothing but head weights Paddock deals with itself:
    a reward/value head absent from the checkpoint (initialised new, as load_model documents) and
    another head's weights the checkpoint carries (a causal LM's lm_head under a reward model).
    A causal LM's missing lm_head is not one of them: nothing replaces it."""
    if head == "causal_lm" or info["mismatched_keys"] or info["error_msgs"]:
        return False
    other_heads = {k for keys in HEAD_KEYS.values() for k in keys} - set(HEAD_KEYS[head])
    return set(info["missing_keys"]) <= set(HEAD_KEYS[head]) and set(info["unexpected_keys"]) <= other_heads


class HeldLoadReport(logging.Filter):
    """Keeps back transformers' LOAD REPORT records logged on this thread, to drop or release."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger
        self.thread = threading.get_ident()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread and "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True

    def release(self) -> None:
        """Log the held records after all, as transformers would have."""
        self.logger.removeFilter(self)
        for record in self.held:
            self.logger.handle(record)
        self.held.clear()


@contextlib.contextmanager
def held_load_report():
    """transformers logs a LOAD REPORT table for every key it did not load, including the reward
    and value heads Paddock initialises itself on purpose, so every reward-model or critic start
    printed a MISSING / newly-initialized warning. The report is held while loading; the caller
    releases it when it says something Paddock does not handle, and it is released if loading fails
    (it then explains the failure). Other transformers messages pass untouched."""
    logger = logging.getLogger("transformers.modeling_utils")  # the logger the report goes to
    held = HeldLoadReport(logger)
    logger.addFilter(held)
    try:
        yield held
    except BaseException:
        held.release()
        raise
    finally:
        logger.removeFilter(held)


def seal(tmp: Path) -> None:
    """Mark a finished temp dir complete. The marker lists every file in it, so a later save into
    the same place knows which files Paddock wrote and may replace."""
    tmp.chmod(0o755)  # mkdtemp makes it private; a model cache is meant to be shared
    manifest = {"files": [name for name in files_under(tmp) if name != COMPLETE_MARKER]}
    (tmp / COMPLETE_MARKER).write_text(json.dumps(manifest, indent=1) + "\n")


def files_under(root: Path) -> list[str]:
    """Every non-directory entry below `root` (symlinks included, never followed), as relative
    POSIX paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        found += [here / name for name in filenames]
        found += [here / name for name in dirnames if (here / name).is_symlink()]
    return sorted(path.relative_to(root).as_posix() for path in found)


# What a checkpoint sealed before markers carried a manifest (they held "ok") can contain: the HF
# layout of a model, its tokenizer and a PEFT adapter with the file naming its base. A README.md
# counts only when it is PEFT's model card (see foreign_files): a user may have written one.
LEGACY_CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "adapter_config.json",
    "paddock_base.txt",
    COMPLETE_MARKER,
)


def foreign_files(path: Path) -> list[str]:
    """Files in the directory `path` that no Paddock save wrote (per its marker's manifest); a
    directory without a marker is all foreign."""
    present = files_under(path)
    marker = path / COMPLETE_MARKER
    if not marker.is_file():
        return present
    try:
        written = set(json.loads(marker.read_text())["files"]) | {COMPLETE_MARKER}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        written = None
    if written is not None:
        return [name for name in present if name not in written]
    # A legacy marker: judge each file by name, the nested merged/ checkpoint by the same rule.
    legacy = [name for name in present if not name.startswith("merged/")]
    foreign = [n for n in legacy if not any(fnmatch.fnmatch(n, p) for p in LEGACY_CHECKPOINT_FILES)]
    if "README.md" in foreign and is_peft_model_card(path / "README.md"):
        foreign.remove("README.md")
    if (path / "merged").is_dir() and not (path / "merged").is_symlink():
        foreign += [f"merged/{name}" for name in foreign_files(path / "merged")]
    return foreign


def is_peft_model_card(file: Path) -> bool:
    try:
        head = file.read_text()[:2000]
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("---") and "library_name: peft" in head


def publish_dir(tmp: Path, final: Path) -> Path:
    """Atomically move a finished temp dir into place. If another process published first, keep
    theirs (it is complete too: only finished dirs are ever renamed) and discard ours."""
    seal(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        # `final` already exists: a concurrent writer won the race.
        shutil.rmtree(tmp, ignore_errors=True)
    if not (final / COMPLETE_MARKER).is_file():
        raise PaddockError(f"{final}: exists but is not a complete Paddock checkpoint; remove it and retry")
    return final


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move the finished temp dir `tmp` to `final`, replacing what an earlier Paddock save left
    there. Anything else at `final` (a file, a link, a directory holding a file no Paddock save
    wrote) is refused before it is touched: Paddock only ever deletes what it wrote itself."""
    seal(tmp)
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise PaddockError(f"{final}: exists and is not a directory; save the checkpoint elsewhere")
    if final.is_dir():
        foreign = foreign_files(final)
        if foreign:
            more = f" and {len(foreign) - 1} more file(s)" if len(foreign) > 1 else ""
            raise PaddockError(
                f"{final}: holds {foreign[0]}{more} that Paddock did not write; "
                "move them away or save the checkpoint elsewhere"
            )
        # Directories cannot be swapped in one rename: the old one steps aside first and is only
        # deleted once the new one is in place. A kill between the two renames leaves the old
        # checkpoint whole in .<name>.old-*/ beside `final`.
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rename(final, aside / final.name)
        try:
            os.rename(tmp, final)
        except OSError:
            os.rename(aside / final.name, final)
            aside.rmdir()
            raise
        shutil.rmtree(aside)
        return final
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists():  # it appeared since the check: another writer's; leave it alone
            raise PaddockError(f"{final}: created by another process while saving; not replaced") from None
        raise
    return final


def save_checkpoint(model, path: str | Path, tokenizer=None) -> Path:
    """Write the HF layout (config.json, safetensors, tokenizer) into a temp dir beside `path`, then
    move it into place, replacing an earlier Paddock checkpoint there (see replace_dir). A failure
    while writing leaves whatever was at `path` as it was."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        return replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
