"""Learning-rate schedules as a pure function of the global step (so resume needs no scheduler state)."""

from __future__ import annotations

import math

from kdedge.recipe import OptimizerConfig, ScheduleConfig

WARMUP_START = 0.01  # warm-up starts at lr/100


def learning_rate(step: int, steps_per_epoch: int, epochs: int, optim: OptimizerConfig,
                  schedule: ScheduleConfig) -> float:
    total = steps_per_epoch * epochs
    warmup = min(int(round(schedule.warmup_epochs * steps_per_epoch)), total)
    base = optim.lr
    if step < warmup:
        return base * (WARMUP_START + (1 - WARMUP_START) * step / warmup)
    if schedule.name == "cosine":
        span = max(total - warmup, 1)
        return 0.5 * base * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    if schedule.name == "step":
        epoch = step // steps_per_epoch
        return base * schedule.gamma ** sum(epoch >= m for m in schedule.milestones)
    return base
