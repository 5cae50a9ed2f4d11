"""Top-1 accuracy and negative log-likelihood."""

from __future__ import annotations

import torch
from torch import Tensor

from kdedge.metrics._checks import check_scores_labels


def accuracy(scores: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of `scores` ([N, C] logits or probabilities; argmax is the same for both).

    Ties go to the lowest class index (torch's argmax rule), the same rule the calibration bins use.
    """
    check_scores_labels(scores, labels)
    pred = scores.argmax(dim=1)
    return float((pred == labels.to(pred.device)).double().mean())


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean cross-entropy −log softmax(logits)[y], in float64 so that small differences between
    calibrated and uncalibrated models are not lost to float32 rounding."""
    check_scores_labels(logits, labels, what="logits")
    logp = torch.log_softmax(logits.double(), dim=1)
    picked = logp.gather(1, labels.to(logp.device).long().unsqueeze(1)).squeeze(1)
    return float(-picked.mean())
