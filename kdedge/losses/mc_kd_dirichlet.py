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
Dirichlet's mean (the student's MC-averaged prediction in the limit), and a0 its precision: low a0 means
the teacher's passes disagreed (knowledge uncertainty). `floor` caps how small a class's geometric-mean
probability may be (m_c >= log floor): a teacher pass at 1e-30 otherwise drives a_c towards 0 and the
lgamma terms towards overflow; the paper tempers its targets for the same reason. The NLL is divided by C
so that alpha weighs it on the scale of a cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from kdedge.losses.base import LossDef, LossParams, UnitFloat, as_float
from kdedge.losses.mc_kd import Samples, Seed
from kdedge.losses.registry import LOSSES

LOG_CONCENTRATION_MAX = 20.0  # a_c <= e^20: keeps lgamma finite in float32


class McKdDirichletParams(LossParams):
    alpha: UnitFloat = Field(0.5, description="weight of the Dirichlet NLL of the teacher's passes; 1 - alpha on CE")
    samples: Samples = 20
    seed: Seed = 0
    floor: float = Field(1e-4, gt=0, lt=1, description="smallest geometric-mean teacher probability a class "
                                                       "target may have (m_c >= log floor)")


def dirichlet_nll(student_logits: torch.Tensor, mean_log_probs: torch.Tensor, floor: float) -> torch.Tensor:
    """Batch mean of -(1/N) sum_n log Dir(pi_n | exp(z)), from the passes' mean log-probabilities m."""
    z = as_float(student_logits)
    if z.shape != mean_log_probs.shape or z.ndim != 2:
        raise ValueError(f"student logits and teacher mean log-probabilities must both be (batch, classes), got "
                         f"{tuple(z.shape)} and {tuple(mean_log_probs.shape)}")
    m = as_float(mean_log_probs).detach().clamp_min(math.log(floor))
    log_a = z.clamp(max=LOG_CONCENTRATION_MAX)
    a = log_a.exp()
    nll = -torch.lgamma(a.sum(1)) + torch.lgamma(a).sum(1) - ((a - 1) * m).sum(1)
    return nll.mean()


def mc_kd_dirichlet_loss(student_logits: torch.Tensor, teacher_mean_log_probs: torch.Tensor,
                         labels: torch.Tensor | None, *, alpha: float, floor: float, samples: int | None = None,
                         seed: int | None = None) -> torch.Tensor:
    """alpha * NLL / C + (1 - alpha) * CE. `samples` and `seed` are read by the step that computes m."""
    del samples, seed
    soft = dirichlet_nll(student_logits, teacher_mean_log_probs, floor) / student_logits.shape[1]
    if labels is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(as_float(student_logits), labels)


LOSSES.register("mc_kd_dirichlet")(LossDef(params=McKdDirichletParams, fn=mc_kd_dirichlet_loss, teacher_mc=True,
                                           teacher_mc_stat="mean_log_probs"))
