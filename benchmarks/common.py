"""Shared benchmark plumbing: alternate the contenders, take medians, print a table and a JSON line.

Speed on a shared 2-core machine is noisy, so nothing here is an absolute figure: contenders run
in turns within one process (A, B, A, B, ...) after a warm-up, and results are reported as ratios
of medians.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def machine(device: torch.device | None = None) -> str:
    """The CPU, its cores and torch's threads; with a CUDA `device`, the GPU too."""
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    host = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device is not None and device.type == "cuda":
        host += f", GPU {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return host


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued kernels, so a timer read next counts them (CUDA runs ahead of the
    Python that launches its work). Nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(contenders: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run each contender once per round, `repeats` rounds; each call returns a dict of measurements."""
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for round_index in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            measured = run()
            measured.setdefault("seconds", time.perf_counter() - start)
            results[name].append(measured)
            print(f"  round {round_index + 1}/{repeats} {name}: {measured}", flush=True)
    return results


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def print_table(header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def print_summary(summary: dict) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(summary, sort_keys=True))


class Matmul(NamedTuple):
    """One linear layer's products: forward x [n, width_in] -> x W^T, backward g [n, width_out] -> g W."""

    width_in: int
    width_out: int
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor], torch.Tensor]


class BareLinears:
    """A model's linear layers as bare matmuls, for a floor under a workload's time: the same
    weights in the same order with nothing between them (no attention, norms, activations,
    adapters, sampling or optimizer). Whatever a contender does with torch's matmuls, it cannot
    take less time than this; a target speedup above `baseline seconds / floor` cannot be met.

    On the CPU in bf16 the weights are packed once for oneDNN (what inductor's freezing does),
    the fastest matmul torch has here, so the floor is not raised by F.linear's plain layout.
    Packed, the decode steps of a whole SmolLM2-135M generation ran only 3-5 % faster than
    through F.linear (bit-identical), so the library itself does not use this private op.
    """

    def __init__(self, model: nn.Module):
        head = model.get_output_embeddings()
        body = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not head]
        self.dtype, self.device = head.weight.dtype, head.weight.device
        self.head, self.body = self._matmul(head), [self._matmul(m) for m in body]
        self._inputs: dict[tuple[int, int], torch.Tensor] = {}

    @staticmethod
    def _matmul(linear: nn.Linear) -> Matmul:
        weight = linear.weight.detach()
        if weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and _packing_supported():
            pack = torch.ops.mkldnn._reorder_linear_weight
            ops = pack(weight, 1), pack(weight.t().contiguous(), 1)
            run = torch.ops.mkldnn._linear_pointwise
            forward, backward = (lambda x, w=w: run(x, w, None, "none", [], "") for w in ops)
        else:
            forward, backward = (lambda x: F.linear(x, weight)), (lambda g: torch.mm(g, weight))
        return Matmul(linear.in_features, linear.out_features, forward, backward)

    def _input(self, rows: int, width: int) -> torch.Tensor:
        if (rows, width) not in self._inputs:
            self._inputs[rows, width] = torch.randn(rows, width, dtype=self.dtype).to(self.device)
        return self._inputs[rows, width]

    @torch.no_grad()
    def forward(self, tokens: int, head_tokens: int = 0) -> None:
        """The decoder's projections over `tokens` tokens, the vocabulary projection over `head_tokens`."""
        for layer in self.body:
            layer.forward(self._input(tokens, layer.width_in))
        if head_tokens:
            self.head.forward(self._input(head_tokens, self.head.width_in))

    def generation(self, prompts: int, prompt_len: int, rows: int, steps: int) -> None:
        """A sampling job: one prefill of prompts x prompt_len tokens (vocabulary projection for
        each prompt's last token only), then `steps` decode steps of `rows` tokens."""
        self.forward(prompts * prompt_len, head_tokens=prompts)
        for _ in range(steps):
            self.forward(rows, head_tokens=rows)

    @torch.no_grad()
    def backward(self, tokens: int, head_tokens: int = 0) -> None:
        """The input-gradient matmuls of `forward` (frozen weights need no weight gradient)."""
        for layer in self.body:
            layer.backward(self._input(tokens, layer.width_out))
        if head_tokens:
            self.head.backward(self._input(head_tokens, self.head.width_out))


def _packing_supported() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fastest(job: Callable[[], None], repeats: int = 3, device: torch.device | None = None) -> float:
    """Seconds of the fastest of `repeats` runs after a warm-up: the estimate for a floor. With a
    CUDA `device`, each run ends when the GPU has finished its work, not when Python has queued it."""
    device = device or torch.device("cpu")
    job()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        job()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


class RssSampler:
    """Peak RSS above the level at start(), sampled every half millisecond on a thread. Run it in a
    child started with MALLOC_MMAP_THRESHOLD_ low, so freed tensors go back to the OS and RSS
    follows live memory."""

    def start(self) -> None:
        self.before = rss_mb()
        self.peak, self.running = self.before, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.0005)

    def stop(self, key: str = "step_mb") -> dict:
        """{before_mb, peak_mb, <key>: the rise}."""
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_mb())
        return {"before_mb": self.before, "peak_mb": self.peak, key: self.peak - self.before}


class AllocatorPeak:
    """RssSampler's figures from the CUDA allocator on a GPU: its peak above the level at start().
    The caching allocator counts every live tensor byte, so the peak is exact and needs no thread."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        sync(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.before = torch.cuda.memory_allocated(self.device) / 2**20

    def stop(self, key: str = "step_mb") -> dict:
        """{before_mb, peak_mb, <key>: the rise}, as RssSampler.stop."""
        sync(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        return {"before_mb": self.before, "peak_mb": peak, key: peak - self.before}


def memory_sampler(device: torch.device):
    """Peak memory where the models live: the CUDA allocator's on a GPU, resident memory on the CPU."""
    return AllocatorPeak(device) if device.type == "cuda" else RssSampler()


def parse_device_args(parser, argv=None):
    """`parser`'s arguments with `device` resolved as `model.device` is (alignment/placement.py),
    before any model loads: a GPU that is not there is a one-line usage error."""
    from alignment.errors import PaddockError
    from alignment.placement import resolve_device

    args = parser.parse_args(argv)
    try:
        args.device = resolve_device(args.device)
    except PaddockError as error:
        parser.error(str(error))
    return args
