"""Feature-based KD, FitNets hints (Romero et al. 2015): match an intermediate student feature to the
teacher's through a learned regressor.

loss = MSE(adapter(student_feat), teacher_feat)   (mean over every element)

The adapter is a 1x1 conv for feature maps (B, C, H, W) or a Linear for vectors (B, C), mapping the
student's channels to the teacher's. When the spatial sizes differ, the **larger** map is adaptive-
average-pooled down to the smaller size, per dimension: the student's map inside the adapter (before
the 1x1 conv; the two commute, pooling first is cheaper), the teacher's map (a constant) by
:meth:`HintAdapter.match_teacher`. Pooling keeps every location's information, unlike interpolating
the smaller map up, which invents detail the smaller network never had.

The adapter is trained with the student and thrown away afterwards; it is never exported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdedge.losses.registry import LOSSES
from kdedge.losses.base import LossDef, LossParams


class HintParams(LossParams):
    # module paths as listed by model.feature_paths(); validated against the built models
    student: str = Field(min_length=1, description="student module path, e.g. stages.1")
    teacher: str = Field(min_length=1, description="teacher module path, e.g. stages.2")


class HintAdapter(nn.Module):
    """Student feature -> teacher's channels and the common spatial size.

    ``student_shape`` / ``teacher_shape`` are the spatial sizes, ``(H, W)`` for maps, ``()`` for
    vectors; both sides must be of the same kind.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        student_shape: tuple[int, ...],
        teacher_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (0, 2):
            raise ValueError(
                "hint features must both be maps (B, C, H, W) or both vectors (B, C); got spatial "
                f"sizes {student_shape} (student) and {teacher_shape} (teacher)"
            )
        self.student_shape = student_shape
        self.teacher_shape = teacher_shape
        self.out_shape = tuple(min(s, t) for s, t in zip(student_shape, teacher_shape))
        self.proj: nn.Module = (
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
            if student_shape
            else nn.Linear(student_channels, teacher_channels)
        )

    def forward(self, student_feat: torch.Tensor) -> torch.Tensor:
        if self.student_shape != self.out_shape:
            student_feat = F.adaptive_avg_pool2d(student_feat, self.out_shape)
        return self.proj(student_feat)

    def match_teacher(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The teacher's feature at the common spatial size (pooled when it is the larger one)."""
        if self.teacher_shape != self.out_shape:
            teacher_feat = F.adaptive_avg_pool2d(teacher_feat, self.out_shape)
        return teacher_feat


def make_hint_adapter(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> HintAdapter:
    """An adapter sized from one example batch of each side's feature (dim 1 is channels)."""
    for side, feat in (("student", student_feat), ("teacher", teacher_feat)):
        if feat.ndim not in (2, 4):
            raise ValueError(f"{side} hint feature must be (B, C) or (B, C, H, W), got {tuple(feat.shape)}")
    return HintAdapter(
        student_feat.shape[1],
        teacher_feat.shape[1],
        tuple(student_feat.shape[2:]),
        tuple(teacher_feat.shape[2:]),
    ).to(device=student_feat.device)


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, adapter: HintAdapter) -> torch.Tensor:
    """MSE between the adapted student feature and the teacher's (a constant: detached)."""
    pred = adapter(student_feat)
    target = adapter.match_teacher(teacher_feat.detach()).to(pred.dtype)
    if pred.shape != target.shape:
        raise ValueError(
            f"adapted student feature {tuple(pred.shape)} does not match teacher {tuple(target.shape)}; "
            "was the adapter built for these features?"
        )
    # written out rather than F.mse_loss: the difference is a fresh tensor, so a teacher feature made
    # under torch.inference_mode never has to be saved for backward
    return (pred - target).pow(2).mean()


LOSSES.register("hint")(LossDef(params=HintParams, fn=hint_loss, kind="features"))
