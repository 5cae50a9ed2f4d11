"""Uncertainty-aware KD (c): a deterministic student with a distribution head, fitted to the teacher's
MC-dropout passes (Ensemble Distribution Distillation, Malinin, Mlodozeniec & Gales, ICLR 2020, with the
dropout passes as the ensemble).

The student's logits z give Dirichlet concentrations a = exp(z); each teacher pass pi_n is treated as a
draw from Dir(a), and the student maximises their likelihood:

    NLL = -(1/N) sum_n log Dir(pi_n | a)
        = -lgamma(a0) + sum_c lgamma(a_c) - sum_c (a_c - 1) * m_c,     a0 = sum_c a_c,
    m_c = (1/N) sum_n log pi_n,c                    (the passes' mean log-probabilities, cached)
    loss = alpha * NLL / C + (1 - alpha) * CE(z, y)

m is a sufficient statistic, so one [N_images, C] tensor is cached (like mc_kd's mean probabilities), not
the N passes. One deterministic pass gives the prediction and the uncertainty: softmax(z) = a / a0 is the
Dirichlet's mean, and a0 its precision: low a0 means the teacher's passes disagreed (knowledge
uncertainty).

Two guards keep the fit finite, as the paper's target annealing does. The NLL has a minimum only when
Z = sum_c exp(m_c) < 1 (true of raw passes by Jensen, with Z -> 1 as the passes agree; float32 rounding of a
confident pass can make Z >= 1, and then the loss falls without bound as a0 grows): m is shifted down per
image so that Z <= 1 - margin, which caps the fitted precision near (C - 1) / (2 margin). And
`floor` bounds a class's target from below (m_c >= log floor, applied before that shift), so a class the
teacher never picks pulls its a_c towards a small value, not towards 0. log a_c is capped softly at
LOG_CONCENTRATION_MAX (the gradient never stops). The NLL is divided by C; it is negative for confident
targets (a density, not a probability), so alpha weighs two terms of different scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from kdedge.errors import KdedgeError
from kdedge.losses.base import LossDef, LossParams, UnitFloat, as_float
from kdedge.losses.mc_kd import Samples, Seed
from kdedge.losses.registry import LOSSES

LOG_CONCENTRATION_MAX = 20.0  # a_c < e^20 (a soft cap): keeps lgamma finite in float32


class McKdDirichletParams(LossParams):
    alpha: UnitFloat = Field(0.5, description="weight of the Dirichlet NLL of the teacher's passes; 1 - alpha on CE")
    samples: Samples = 20
    seed: Seed = 0
    floor: float = Field(1e-4, gt=0, lt=1, description="smallest geometric-mean teacher probability a class "
                                                       "target may have (m_c >= log floor)")
    margin: float = Field(1e-3, gt=0, lt=0.5, description="sum_c exp(m_c) <= 1 - margin per image: caps the "
                                                          "fitted precision a0 near (C - 1) / (2 margin)")


def dirichlet_targets(mean_log_probs: torch.Tensor, floor: float, margin: float) -> torch.Tensor:
    """m floored at log floor, then shifted per image so that sum_c exp(m_c) <= 1 - margin."""
    classes = mean_log_probs.shape[-1]
    if floor * classes >= 1 - margin:  # every class at the floor already sums past 1 - margin: flat targets
        raise KdedgeError(f"distill.losses (mc_kd_dirichlet).floor: {floor:g} x {classes} classes >= 1 - margin; "
                          f"set floor well below 1/{classes} (e.g. {min(1e-4, 0.01 / classes):g})")
    m = as_float(mean_log_probs).detach().clamp_min(math.log(floor))
    excess = torch.logsumexp(m, dim=1, keepdim=True) - math.log1p(-margin)
    return m - excess.clamp_min(0.0)


def dirichlet_nll(student_logits: torch.Tensor, mean_log_probs: torch.Tensor, floor: float,
                  margin: float = 1e-3) -> torch.Tensor:
    """Batch mean of -(1/N) sum_n log Dir(pi_n | a), a = exp(z), from the passes' mean log-probabilities m
    (guarded by dirichlet_targets)."""
    z = as_float(student_logits)
    if z.shape != mean_log_probs.shape or z.ndim != 2:
        raise ValueError(f"student logits and teacher mean log-probabilities must both be (batch, classes), got "
                         f"{tuple(z.shape)} and {tuple(mean_log_probs.shape)}")
    m = dirichlet_targets(mean_log_probs, floor, margin)
    log_a = LOG_CONCENTRATION_MAX - F.softplus(LOG_CONCENTRATION_MAX - z)  # = z well below the cap
    a = log_a.exp()
    nll = -torch.lgamma(a.sum(1)) + torch.lgamma(a).sum(1) - ((a - 1) * m).sum(1)
    return nll.mean()


def mc_kd_dirichlet_loss(student_logits: torch.Tensor, teacher_mean_log_probs: torch.Tensor,
                         labels: torch.Tensor | None, *, alpha: float, floor: float, margin: float = 1e-3,
                         samples: int | None = None, seed: int | None = None) -> torch.Tensor:
    """alpha * NLL / C + (1 - alpha) * CE. `samples` and `seed` are read by the step that computes m."""
    del samples, seed
    soft = dirichlet_nll(student_logits, teacher_mean_log_probs, floor, margin) / student_logits.shape[1]
    if labels is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(as_float(student_logits), labels)


LOSSES.register("mc_kd_dirichlet")(LossDef(params=McKdDirichletParams, fn=mc_kd_dirichlet_loss, teacher_mc=True,
                                           teacher_mc_stat="mean_log_probs"))
