"""Where a run's models and tensors live: the one place that turns `model.device` into a device.

    auto      the process's own GPU under a launcher (LOCAL_RANK), cuda:0 for one process on a
              GPU machine, else the CPU
    cpu       the CPU, even on a GPU machine
    cuda      this process's GPU (cuda:LOCAL_RANK; cuda:0 without a launcher)
    cuda:N    GPU N; under a launcher every process would share it, so it is refused there

Every model a stage builds (alignment/model_setup.py), every batch it feeds them and the generation
engine's cache go to `resolve_device(model.device)`; the CLI commands and benchmarks take the same
values. `placement_record` is what each stage's summary.json says it ran with.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from alignment.errors import PaddockError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "where the model runs: auto (a GPU when there is one), cpu, cuda or cuda:N"


def check_device_spec(spec: str) -> None:
    if not DEVICE_PATTERN.fullmatch(spec):
        raise PaddockError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N")


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device `spec` names on this process; a one-line error for a GPU that is not there."""
    import torch  # here, not at the top: recipes and the CLI's argument parsing import this module

    check_device_spec(spec)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PaddockError(f"device {spec!r}: this machine has no CUDA GPU (torch {torch.__version__})")
    if spec in ("auto", "cuda"):
        index = local_rank if launched else 0
    else:
        if launched:
            raise PaddockError(
                f"device {spec!r}: under a launcher each process takes its own GPU; use auto or cuda"
            )
        index = int(spec.split(":")[1])
    if index >= torch.cuda.device_count():
        raise PaddockError(f"device cuda:{index}: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def module_device(module) -> torch.device:
    """Where a model's weights are (the CPU for a model, or a stand-in, without parameters)."""
    import torch

    parameters = getattr(module, "parameters", None)
    parameter = next(parameters(), None) if parameters is not None else None
    return parameter.device if parameter is not None else torch.device("cpu")


def to_device(batch: dict, device: torch.device) -> dict:
    """A collated batch's tensors on `device` (other values as they are)."""
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def kernel_backend(device: torch.device) -> str:
    """The kernel backend the model's fused ops pick for tensors on `device`."""
    from alignment.base_model.kernels import backend_for

    return backend_for(device)


def peak_memory_gb(device: torch.device) -> dict:
    """This process's peak resident host memory so far and, on a GPU, the peak its CUDA allocator
    handed out, in GB (the process's whole life: a stage's figure includes the stages before it in
    the same `paddock run`)."""
    import resource

    import torch

    peak = {"host": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)}  # KiB on Linux
    if device.type == "cuda":
        peak["gpu"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
    return peak


def placement_record(device: torch.device) -> dict:
    """What a stage ran with, for its summary.json."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    backend = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        backend = torch.distributed.get_backend()
    return {"device": str(device), "world_size": world, "backend": backend, "kernels": kernel_backend(device)}
