"""Timing inference: warm-up excluded, many timed runs, medians with their spread.

Pure bookkeeping around a callable, so every runtime (torch, ONNX Runtime, TensorRT) is timed the
same way; the caller makes the callable synchronous (e.g. CUDA synchronize) when it has to be.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable


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

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s}


def summarise_times(seconds: list[float], batch: int) -> Timing:
    ms = sorted(s * 1000 for s in seconds)
    deciles = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else [ms[0]] * 9
    return Timing(runs=len(ms), batch=batch, median_ms=statistics.median(ms), p10_ms=deciles[0],
                  p90_ms=deciles[-1], min_ms=ms[0])


def time_interleaved(calls: dict[str, Callable[[], object]], *, batch: int, rounds: int = 10, runs: int = 50,
                     warmup: int = 20) -> dict[str, Timing]:
    """Time several callables fairly: each is warmed up, then rounds alternate between them so drift
    of a shared machine hits all alike; `rounds * runs` timed calls each."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: summarise_times(t, batch) for name, t in times.items()}
