"""Learning-rate schedules against torch's own schedulers."""

from __future__ import annotations

import pytest
import torch

from kdedge.recipe import OptimizerConfig, ScheduleConfig
from kdedge.train.schedule import WARMUP_START, learning_rate


def _torch_lrs(scheduler_factory, steps: int, lr: float, step_every: int = 1) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = scheduler_factory(opt)
    out = []
    for i in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if (i + 1) % step_every == 0:
            sched.step()
    return out


def test_cosine_matches_torch_cosine_annealing():
    spe, epochs, lr = 7, 5, 0.3
    ours = [learning_rate(s, spe, epochs, OptimizerConfig(lr=lr), ScheduleConfig(name="cosine"))
            for s in range(spe * epochs)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=spe * epochs), spe * epochs, lr)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_step_matches_torch_multistep():
    spe, epochs, lr = 4, 10, 0.1
    cfg = ScheduleConfig(name="step", milestones=[3, 7], gamma=0.2)
    ours = [learning_rate(s, spe, epochs, OptimizerConfig(lr=lr), cfg) for s in range(spe * epochs)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 7], gamma=0.2),
                     spe * epochs, lr, step_every=spe)
    assert ours == pytest.approx(ref, rel=1e-9)


def test_warmup_is_linear_then_cosine_to_zero():
    spe, epochs, lr = 10, 4, 0.2
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1)
    lrs = [learning_rate(s, spe, epochs, OptimizerConfig(lr=lr), cfg) for s in range(spe * epochs + 1)]
    assert lrs[0] == pytest.approx(lr * WARMUP_START)
    assert lrs[5] == pytest.approx(lr * (WARMUP_START + (1 - WARMUP_START) * 0.5))
    assert lrs[10] == pytest.approx(lr)  # warm-up ends at the peak
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after warm-up


def test_constant():
    assert learning_rate(123, 10, 20, OptimizerConfig(lr=0.05), ScheduleConfig(name="constant")) == 0.05
