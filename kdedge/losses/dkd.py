"""Decoupled KD (Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022).

The classical KD term splits exactly as KD = TCKD + (1 - p_t^teacher) * NCKD, where

* TCKD is the KL between the binary distributions (target class, all non-target classes together),
* NCKD is the KL between the distributions over the non-target classes only (renormalised).

DKD weighs the two freely: loss = alpha * T^2 * TCKD + beta * T^2 * NCKD (T^2 as in the paper's code).
KLs are summed over classes and averaged over the batch. Labels are required: the split needs the target.

This is the DKD term alone. The paper's method (and mdistiller's trainer) trains on
CE + min(epoch / 20, 1) * DKD, epochs counted from 1: in a recipe, a ``ce`` entry plus this one with
``warmup_epochs: 20`` (a per-entry weight warm-up that the KD step applies, see
kdedge.train.distill_step); a dkd entry alone trains without CE and without warm-up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdedge.losses.registry import LOSSES
from kdedge.losses.base import LossDef, LossParams, NonNegativeFloat, Temperature, as_float, check_logits


class DKDParams(LossParams):
    # defaults: the paper's CIFAR-100 setting
    alpha: NonNegativeFloat = Field(1.0, description="weight of TCKD (target vs non-target)")
    beta: NonNegativeFloat = Field(8.0, description="weight of NCKD (among non-target classes)")
    temperature: Temperature = Field(4.0, description='softmax temperature > 0, or "calibrated" (teacher T*)')


def _binary_and_rest(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From scaled logits (B, C): log of [p_target, p_rest] (B, 2) and the non-target logits (B, C-1).

    The non-target logits are gathered, not masked with a large constant, so the split is exact in
    any dtype; log p_rest comes from logsumexp, so it stays exact when p_target is close to 1.
    """
    target = F.one_hot(labels, z.shape[1]).bool()
    rest = z[~target].view(z.shape[0], z.shape[1] - 1)
    lse = torch.logsumexp(z, dim=1)
    log_binary = torch.stack([z[target] - lse, torch.logsumexp(rest, dim=1) - lse], dim=1)
    return log_binary, rest


def dkd_parts(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) without the T^2 factor; batch means of KLs summed over classes."""
    check_logits(student_logits, teacher_logits, temperature)
    if student_logits.shape[1] < 2:
        raise ValueError("dkd needs at least 2 classes")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"labels must be (batch,), got {tuple(labels.shape)} for logits {tuple(student_logits.shape)}"
        )
    log_b_s, rest_s = _binary_and_rest(as_float(student_logits) / temperature, labels)
    log_b_t, rest_t = _binary_and_rest(as_float(teacher_logits).detach() / temperature, labels)
    # log-space targets (finite for finite logits): student == teacher gives exactly 0
    tckd = F.kl_div(log_b_s, log_b_t, reduction="batchmean", log_target=True)
    nckd = F.kl_div(
        F.log_softmax(rest_s, dim=1), F.log_softmax(rest_t, dim=1), reduction="batchmean", log_target=True
    )
    return tckd, nckd


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    if labels is None:
        raise ValueError(
            "dkd needs labels (it splits the target class from the rest); "
            "use the hinton loss on an unlabeled transfer set"
        )
    tckd, nckd = dkd_parts(student_logits, teacher_logits, labels, temperature=temperature)
    return (alpha * tckd + beta * nckd) * (temperature * temperature)


LOSSES.register("dkd")(LossDef(params=DKDParams, fn=dkd_loss, needs_labels=True))
