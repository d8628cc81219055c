"""Several processes on one or many machines: `accelerate launch` (or `torchrun`) starts N copies of
`paddock run`, and this module tells each copy who it is and how to share the work.

How a run is split:
- every process runs every stage's code on the same data and the same plan, so no process has
  to be told what another decided (the data order is a pure function of the seed);
- training steps split each micro-batch across processes and average gradients through
  accelerate's DDP or torch's FSDP2 (alignment/training/
  sharded.py), with the loss normalised by the global item count, so N processes take the same
  optimizer step as one process with the whole batch; PPO sums its own gradients;
- only the main process writes into the run directory. The others get a private mirror of the
  stage directory (small files copied, large ones symlinked) for whatever the stage code writes,
  so no stage needs a rank check around each file it saves, and a cache the main process writes
  mid-stage can never change another process's path through the code.

One process (no launcher) is the default and costs nothing: no process group, no Accelerator.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from alignment.errors import PaddockError

MIRROR_COPY_LIMIT = 1 << 20  # files under 1 MiB are copied into a mirror, larger ones symlinked


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def enabled() -> bool:
    return world_size() > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


@lru_cache(maxsize=1)
def accelerator():
    """The process's Accelerator (it sets up the process group: gloo on CPU, NCCL on GPUs), or None
    for a single process."""
    if not enabled():
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def prepare(model, optimizer):
    """(model, optimizer) wrapped by accelerate for the launcher's strategy (DDP or FSDP), or as
    given for one process. DeepSpeed is refused: nothing in Paddock gathers ZeRO-3's partitioned
    parameters for evaluation, sampling or saving, so FSDP2 is the sharded engine."""
    acc = accelerator()
    if acc is None:
        return model, optimizer
    if getattr(acc.state, "deepspeed_plugin", None) is not None:
        raise PaddockError(
            "DeepSpeed is not supported; launch with recipes/accelerate/ddp.yaml or fsdp.yaml (FSDP2)"
        )
    return acc.prepare(model, optimizer)


def barrier() -> None:
    if enabled():
        accelerator().wait_for_everyone()


def all_reduce_sum(values: list[float]) -> list[float]:
    """The element-wise sum over processes (float64, so counts stay exact)."""
    if not enabled():
        return list(values)
    acc = accelerator()
    tensor = torch.tensor(values, dtype=torch.float64, device=acc.device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(value) -> list:
    """Every process's `value`, in rank order (small Python objects only: it pickles in memory
    between our own processes, never from disk)."""
    if not enabled():
        return [value]
    accelerator()
    out = [None] * world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def shard(items: list) -> list:
    """This process's share of a list: every world_size-th item from its rank."""
    return items[rank() :: world_size()]


_split_calls = {"count": 0}


def my_batches(n_batches: int) -> list[int]:
    """This process's share of `n_batches` batches that every process splits the same way: batch i
    goes to process (i + c) % world_size, where c counts the calls, so a list of one batch does not
    always land on the main process. Every process makes the same calls in the same order, so they
    agree on c. One process gets every batch."""
    offset = _split_calls["count"]
    _split_calls["count"] += 1
    return [i for i in range(n_batches) if (i + offset) % world_size() == rank()]


def gather_batches(results: dict[int, list], across_processes: bool = True) -> list:
    """Results by batch index ({index: items}) as one list in batch order: with `across_processes`,
    every process's `my_batches` results, else (or with one process) this process's own."""
    if across_processes and enabled():
        for part in all_gather_objects(results):
            results = {**results, **part}
    return [item for index in sorted(results) for item in results[index]]


def check_batch(batch_size: int, what: str) -> None:
    """Each process must get at least one example of every micro-batch, or DDP would wait forever
    for a gradient that never comes."""
    if enabled() and batch_size < world_size():
        raise PaddockError(
            f"{what}: batch_size {batch_size} is smaller than the {world_size()} processes; "
            "raise batch_size or launch fewer processes"
        )


@lru_cache(maxsize=1)
def _mirror_root() -> Path:
    return Path(tempfile.mkdtemp(prefix=f"paddock-rank{rank()}-"))


def stage_root(real_root: Path) -> Path:
    """Where this process writes a stage's files: the real directory on the main process, a fresh
    mirror of it elsewhere."""
    if is_main():
        return real_root
    mirror = _mirror_root() / real_root.name
    shutil.rmtree(mirror, ignore_errors=True)
    mirror.mkdir(parents=True)
    if real_root.is_dir():
        for path in sorted(real_root.rglob("*")):
            target = mirror / path.relative_to(real_root)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            elif path.stat().st_size < MIRROR_COPY_LIMIT:
                shutil.copy2(path, target)  # small files may be appended to or rewritten in place
            else:
                target.symlink_to(path.resolve())  # weights and optimizer states: read, then replaced
    return mirror


def cleanup() -> None:
    """Remove this process's mirrors, unless PADDOCK_KEEP_MIRRORS=1 asks to keep them for
    inspection (their path is printed)."""
    if not enabled() or is_main():
        return
    if os.environ.get("PADDOCK_KEEP_MIRRORS") == "1":
        print(f"[rank {rank()}] kept its stage mirrors in {_mirror_root()}")
    else:
        shutil.rmtree(_mirror_root(), ignore_errors=True)


def broadcast_parameters(params) -> None:
    """Give every process the main process's values (randomly initialised adapters or heads)."""
    if not enabled():
        return
    accelerator()
    for param in params:
        torch.distributed.broadcast(param.data, src=0)


def all_reduce_gradients(params) -> None:
    """Sum gradients over processes in one flat buffer; a process whose share of a minibatch was
    empty contributes zeros. Used where the model is not wrapped by DDP (PPO's shared-base policy
    and critic adapters are called through inner modules, which DDP's hooks would not see)."""
    if not enabled():
        return
    accelerator()
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        param.grad = flat[offset : offset + grad.numel()].view_as(grad).to(grad.dtype)
        offset += grad.numel()
