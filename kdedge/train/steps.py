"""Step functions: closures that map a batch to (loss, logits). The loop owns everything else."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# (inputs, labels, dataset indices) -> (loss, logits); indices let a step look up cached targets.
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def supervised_step(model: nn.Module, *, label_smoothing: float = 0.0) -> StepFn:
    def step(x: torch.Tensor, y: torch.Tensor, _idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return step
