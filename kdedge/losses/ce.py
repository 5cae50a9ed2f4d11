"""Cross-entropy on the labels as a recipe loss term.

Methods that add CE to a distillation term spell it as its own entry, e.g. DKD as published
(Zhao et al. 2022; mdistiller's trainer): loss = 1.0 * CE + min(epoch / 20, 1) * DKD, i.e.
``[{name: ce}, {name: dkd, warmup_epochs: 20}]``. (Hinton KD has its CE inside, weighted by alpha.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdedge.losses.base import LossDef, LossParams, as_float
from kdedge.losses.registry import LOSSES


class CEParams(LossParams):
    """No options: the weight and warm-up of the entry are the loader's."""


def ce_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy of the student's logits against the labels; the teacher is not used."""
    if labels is None:
        raise ValueError("ce needs labels; use the hinton loss on an unlabeled transfer set")
    return F.cross_entropy(as_float(student_logits), labels)


LOSSES.register("ce")(LossDef(params=CEParams, fn=ce_loss, needs_labels=True))
