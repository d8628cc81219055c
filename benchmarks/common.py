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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


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
