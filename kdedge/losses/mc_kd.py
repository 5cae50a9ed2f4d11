"""Uncertainty-aware KD (a): the student learns the teacher's MC-dropout predictive distribution.

    p̄ = (1/N) Σ_k softmax(teacher_k(x))        N dropout passes of the teacher (kdedge.uncertainty)
    loss = alpha * T^2 * KL(softmax(log p̄ / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

p̄ is computed once over the transfer set and cached with the teacher logits (kdedge/train/distill_step.py,
``TeacherCache.mc_targets``), by kdedge.uncertainty's fast path: the layers before the teacher's first
dropout run once, the stochastic tail N times. When the student's inputs are augmented it is computed
per batch instead (N tail passes per batch). At T = 1 the target is p̄ itself; at T != 1 p̄ is tempered
as if log p̄ were logits (the MC predictive has no logits of its own). The default T is 1: the point is
the predictive distribution itself, which MC averaging has already softened.
Unlabeled transfer sets (``labels=None``): only the soft term, at full weight (as hinton).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from kdedge.losses.base import LossDef, LossParams, PositiveFloat, UnitFloat, as_float
from kdedge.losses.registry import LOSSES

Samples = Annotated[int, Field(ge=2, le=10_000, strict=True,
                               description="teacher MC-dropout passes N (computed once over the transfer set and cached)")]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1, strict=True, description="seed of the teacher's dropout masks")]


class McKdParams(LossParams):
    alpha: UnitFloat = Field(0.5, description="weight of the soft (teacher MC) term; 1 - alpha on CE")
    temperature: PositiveFloat = Field(1.0, description="softmax temperature > 0 (1: the MC predictive itself)")
    samples: Samples = 20
    seed: Seed = 0


def mc_log_target(teacher_mean_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(log p̄ / T): the tempered MC predictive, in log space (a zero probability stays finite)."""
    p = as_float(teacher_mean_probs).detach()
    if p.ndim != 2:
        raise ValueError(f"teacher MC probabilities must be (batch, classes), got {tuple(p.shape)}")
    log_p = p.clamp_min(torch.finfo(p.dtype).tiny).log()
    return torch.log_softmax(log_p / temperature, dim=1)


def mc_soft_loss(student_log_q: torch.Tensor, teacher_mean_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(tempered p̄ || q), batch mean, for the student's log-probabilities at T."""
    if student_log_q.shape != teacher_mean_probs.shape:
        raise ValueError(f"student and teacher must both be (batch, classes), got {tuple(student_log_q.shape)} "
                         f"and {tuple(teacher_mean_probs.shape)}")
    log_p = mc_log_target(teacher_mean_probs, temperature)
    kl = F.kl_div(student_log_q, log_p, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)


def mc_kd_loss(student_logits: torch.Tensor, teacher_mean_probs: torch.Tensor, labels: torch.Tensor | None, *,
               alpha: float, temperature: float, samples: int | None = None, seed: int | None = None) -> torch.Tensor:
    """alpha * T^2 * KL(tempered p̄ || softmax(s/T)) + (1 - alpha) * CE. `samples` and `seed` are read by the
    step that computes p̄; they are accepted here so the recipe's options pass straight through."""
    del samples, seed
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    s = as_float(student_logits)
    soft = mc_soft_loss(F.log_softmax(s / temperature, dim=1), teacher_mean_probs, temperature)
    if labels is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(s, labels)


LOSSES.register("mc_kd")(LossDef(params=McKdParams, fn=mc_kd_loss, teacher_mc=True))
