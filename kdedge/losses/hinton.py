"""Response-based KD (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)

The KL is summed over classes and averaged over the batch. T^2 keeps the soft term's gradient at the
same scale as T changes (its gradient w.r.t. the logits shrinks like 1/T^2 otherwise).
Unlabeled transfer sets (``labels=None``): the CE term is dropped and the soft term gets full weight
(alpha is ignored), since the teacher's predictions are then the only targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdedge.losses.registry import LOSSES
from kdedge.losses.base import LossDef, LossParams, Temperature, UnitFloat, as_float, check_logits


class HintonParams(LossParams):
    alpha: UnitFloat = Field(0.5, description="weight of the soft (teacher) term; 1 - alpha on CE")
    temperature: Temperature = Field(4.0, description='softmax temperature > 0, or "calibrated" (teacher T*)')


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean; the teacher is a constant (detached)."""
    check_logits(student_logits, teacher_logits, temperature)
    log_p_s = F.log_softmax(as_float(student_logits) / temperature, dim=1)
    # log-space target: the same op on both sides, so student == teacher gives exactly 0 (comparing
    # log(softmax) with log_softmax would leave rounding noise times T^2); log_softmax of finite
    # logits is finite, and the clamp keeps a -inf (masked) teacher logit from making 0 * inf = nan
    log_p_t = F.log_softmax(as_float(teacher_logits).detach() / temperature, dim=1)
    log_p_t = log_p_t.clamp_min(torch.finfo(log_p_t.dtype).min)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """alpha * T^2 * KL + (1 - alpha) * CE; with ``labels=None`` only the soft term, at full weight."""
    soft = soft_target_loss(student_logits, teacher_logits, temperature=temperature)
    if labels is None:
        return soft
    if alpha >= 1.0:  # skip the CE entirely: labels may be placeholders
        return soft
    hard = F.cross_entropy(as_float(student_logits), labels)
    return alpha * soft + (1.0 - alpha) * hard


LOSSES.register("hinton")(LossDef(params=HintonParams, fn=hinton_loss))
