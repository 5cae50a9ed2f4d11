"""Input validation shared by the metric functions: fail early with a message that names the problem."""

from __future__ import annotations

import torch
from torch import Tensor


def check_scores_labels(scores: Tensor, labels: Tensor, *, what: str = "scores") -> None:
    """`scores` must be a finite float [N, C] tensor and `labels` an integer [N] tensor in [0, C)."""
    if not isinstance(scores, Tensor) or not isinstance(labels, Tensor):
        raise ValueError(
            f"{what} and labels must be torch tensors, got {type(scores).__name__} and {type(labels).__name__}"
        )
    if scores.ndim != 2:
        raise ValueError(f"{what} must have shape [N, C], got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {scores.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [N], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}")
    n, c = scores.shape
    if labels.shape[0] != n:
        raise ValueError(f"shape mismatch: {what} has {n} rows but labels has {labels.shape[0]} entries")
    if n == 0:
        raise ValueError(f"{what} is empty (N=0): a metric needs at least one sample")
    if c == 0:
        raise ValueError(f"{what} has no classes (C=0)")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= c:
        raise ValueError(f"labels must lie in [0, {c - 1}] for {c} classes, found values in [{lo}, {hi}]")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{what} contain NaN or infinite values")


def check_probs(probs: Tensor) -> None:
    """Probabilities must lie in [0, 1]; logits passed by mistake are caught here rather than silently binned."""
    if bool((probs < 0).any()) or bool((probs > 1).any()):
        raise ValueError(
            f"probs must lie in [0, 1] (got min {float(probs.min()):.4g}, max {float(probs.max()):.4g}); "
            "pass softmax probabilities, not logits"
        )


def check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
