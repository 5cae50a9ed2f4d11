"""One dict with every per-split classification metric, as stored in run reports."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdedge.metrics._checks import check_scores_labels
from kdedge.metrics.calibration import calibration_bins
from kdedge.metrics.classification import accuracy, nll


def classification_report(logits: Tensor, labels: Tensor, n_bins: int = 10) -> dict[str, Any]:
    """{"accuracy", "nll", "ece", "mce", "n"} of `logits` [N, C]; probabilities via float64 softmax."""
    check_scores_labels(logits, labels, what="logits")
    bins = calibration_bins(torch.softmax(logits.double(), dim=1), labels, n_bins)
    return {
        "accuracy": accuracy(logits, labels),
        "nll": nll(logits, labels),
        "ece": bins.ece,
        "mce": bins.mce,
        "n": int(labels.shape[0]),
    }
