"""Timing inference: warm-up excluded, many timed runs, medians with their spread.

Pure bookkeeping around a callable, so every runtime (torch, ONNX Runtime, TensorRT) is timed the
same way; the caller makes the callable synchronous (e.g. CUDA synchronize) when it has to be. Work on
torch's CUDA stream is timed by CUDA events (`cuda_clock`): the GPU's own clock, from a point where the
stream is idle to the end of the call's last kernel.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

# runs a call and returns the seconds it took
Clock = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class Timing:
    runs: int
    batch: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000)

    @property
    def spread(self) -> float:
        """p90 / median: 1 on a quiet machine; far above 1 when other work or thread contention interferes."""
        return self.p90_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s, "spread": self.spread}


def summarise_times(seconds: list[float], batch: int) -> Timing:
    ms = sorted(s * 1000 for s in seconds)
    deciles = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else [ms[0]] * 9
    return Timing(runs=len(ms), batch=batch, median_ms=statistics.median(ms), p10_ms=deciles[0],
                  p90_ms=deciles[-1], min_ms=ms[0])


def wall_clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cuda_clock(device: Any = None) -> Clock:
    """A Clock on CUDA events: the stream is drained first (nothing queued earlier is counted), events
    bracket the call on the current stream, and the end event is waited for, so the time covers the
    work the call queued, not only its launch. Work on other streams (e.g. ONNX Runtime's) is only
    covered when the call itself waits for it."""
    import torch  # here, so that timing the other runtimes does not need torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def clock(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000  # elapsed_time is in ms

    return clock


def time_interleaved(calls: dict[str, Callable[[], object]], *, batch: int, rounds: int = 10, runs: int = 50,
                     warmup: int = 20, clock: Clock = wall_clock) -> dict[str, Timing]:
    """Time several callables fairly: each is warmed up, then rounds alternate between them so drift
    of a shared machine hits all alike; `rounds * runs` timed calls each, each timed by `clock`
    (`cuda_clock()` for work on a CUDA GPU)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(runs):
                times[name].append(clock(fn))
    return {name: summarise_times(t, batch) for name, t in times.items()}


# p90 / median above this: one run in ten took 1.5x the median or longer, more than the ordinary jitter
# of a timer and cache; the median is then not a number to choose a model or runtime by
MAX_SPREAD = 1.5


def stability_advice(threads: int | None) -> str:
    quiet = "on a quiet machine (nothing else running), with more --runs"
    return f"re-run {quiet}" if threads == 1 else f"re-run with --threads 1 {quiet}"


def stability_flags(measurements: dict[str, dict]) -> list[str]:
    """Why the timings of one model on one runtime should not be trusted (empty when they can be).
    `measurements`: {"batch1": Timing.to_dict(), "batch64": ...}. Flags a spread above MAX_SPREAD, and a
    larger batch that gives fewer images per second than batch 1 (batching never costs throughput on an
    idle CPU, so that is interference or thread oversubscription)."""
    flags = []
    for label, t in measurements.items():
        spread = t["p90_ms"] / t["median_ms"] if t["median_ms"] > 0 else float("inf")
        if spread > MAX_SPREAD:
            flags.append(f"{_batch(label)}: p90/median {spread:.2f} (> {MAX_SPREAD})")
    one = measurements.get("batch1")
    for label, t in measurements.items():
        if one is not None and t["batch"] > 1 and t["images_per_s"] < one["images_per_s"]:
            flags.append(f"{_batch(label)}: {t['images_per_s']:,.0f} img/s, below batch 1's "
                         f"{one['images_per_s']:,.0f} img/s")
    return flags


def _batch(label: str) -> str:
    return "batch " + label.removeprefix("batch")
