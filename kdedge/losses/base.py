"""What every loss module registers: a params model (the recipe's options) and a pure function.

A recipe entry ``{name: hinton, weight: 1.0, alpha: 0.5, temperature: 4.0}`` is split by the recipe
loader: ``name`` picks the :class:`LossDef`, ``weight`` stays with the loader, and the rest is
validated by ``LossDef.params`` (unknown keys and out-of-range values are errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field

from kdedge.choices import CALIBRATED, CalibratedTemperature
from kdedge.errors import KdedgeError

# strict: YAML "4" (a string) or `true` is a mistake, not a temperature
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
UnitFloat = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]

# "calibrated": use the teacher's temperature T* fitted by NLL on the validation split (seed 003);
# the pipeline substitutes the number with `resolve_temperature` before calling the loss function.
Temperature = Union[PositiveFloat, CalibratedTemperature]


class LossParams(BaseModel):
    """Base of every loss's options: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class LossDef:
    """One registered loss.

    ``kind`` says what ``fn`` consumes: ``"logits"`` losses are called as
    ``fn(student_logits, teacher_logits, labels, **options)``; ``"features"`` losses need tapped
    intermediate features (see :mod:`kdedge.features`) and a trainable adapter, and their params
    name the module paths rather than keyword arguments of ``fn``.

    ``teacher_mc``: ``fn`` gets the teacher's MC-dropout mean probabilities [B, C] (``samples`` passes,
    mask ``seed``: options the step reads; cached like the logits) in place of the teacher logits, or
    the mean of the passes' log-probabilities when ``teacher_mc_stat`` says so.
    ``student_mc``: ``fn`` gets ``student_samples`` stochastic student passes [K, B, C] (kdedge/losses/mc_kd*.py).
    """

    params: type[LossParams]
    fn: Callable[..., torch.Tensor]
    kind: Literal["logits", "features"] = "logits"
    needs_labels: bool = False  # True: cannot train on an unlabeled transfer set without pseudo-labels
    teacher_mc: bool = False    # True: the teacher must have dropout (a recipe error otherwise)
    student_mc: bool = False    # True: the student must have dropout
    # the McResult field a teacher_mc loss is given: "mean_probs", or "mean_log_probs" (mean of log p over passes)
    teacher_mc_stat: Literal["mean_probs", "mean_log_probs"] = "mean_probs"


def resolve_temperature(temperature: float | str, calibrated: float | None) -> float:
    """The number to distill at: a fixed T, or the teacher's fitted T* when the recipe says so."""
    if temperature == CALIBRATED:
        if calibrated is None:
            raise KdedgeError(
                'temperature "calibrated" needs the teacher\'s fitted temperature; '
                "run the calibrate stage first or give a number"
            )
        temperature = calibrated
    if isinstance(temperature, str) or not temperature > 0:
        raise KdedgeError(f"temperature must be a positive number or \"calibrated\", got {temperature!r}")
    return float(temperature)


def check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> None:
    """Fail loudly on shapes that would otherwise broadcast into a wrong loss."""
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must both be (batch, classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def as_float(x: torch.Tensor) -> torch.Tensor:
    # softmax at high T on fp16/bf16 logits loses the small differences KD relies on
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
