"""Out-of-distribution detection from predictive uncertainty, as pure functions on tensors.

Scores, each oriented so that **higher = more out-of-distribution**:

* ``entropy``: predictive entropy −Σ_c p_c log p_c (nats, 0·log 0 = 0) of the (MC-averaged) probabilities;
* ``max_prob``: the *negated* maximum probability, −max_c p_c (a confident prediction is in-distribution).

AUROC of a score = P(score of an OOD image > score of an in-distribution image), ties counted 1/2
(the Mann-Whitney U statistic over n_in x n_out pairs; what sklearn's roc_auc_score gives with OOD as
the positive class). 0.5 is chance, 1.0 separates the two sets perfectly, below 0.5 the score points
the wrong way (the model is *more* confident out of distribution).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from kdedge.metrics._checks import check_probs

SCORES = ("entropy", "max_prob")
SCORE_NOTES = {"entropy": "predictive entropy (higher = more OOD)",
               "max_prob": "negated max probability (higher = more OOD)"}


def _vector(scores: Tensor | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(scores.detach().cpu().double() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a 1-D vector of scores, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} is empty: AUROC needs at least one score on each side")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return x


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]  # first index of each run of equal values
    ends = np.r_[starts[1:], x.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(in_scores: Tensor | np.ndarray, out_scores: Tensor | np.ndarray) -> float:
    """AUROC of separating `out_scores` (positives) from `in_scores`: P(out > in) + P(out == in) / 2."""
    a, b = _vector(in_scores, "in-distribution scores"), _vector(out_scores, "out-of-distribution scores")
    ranks = _average_ranks(np.concatenate([a, b]))
    u = ranks[a.size:].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


def ood_scores(probs: Tensor) -> dict[str, Tensor]:
    """{entropy, max_prob} per image from probabilities [N, C] (float64), higher = more OOD."""
    if not isinstance(probs, Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        raise ValueError(f"probs must be a float tensor [N, C], got {getattr(probs, 'shape', type(probs))}")
    check_probs(probs)
    p = probs.double()
    return {"entropy": -torch.special.xlogy(p, p).sum(1), "max_prob": -p.max(1).values}


def ood_auroc(in_probs: Tensor, out_probs: Tensor) -> dict[str, float]:
    """{entropy, max_prob}: the AUROC of each score for in- (`in_probs`) vs out-of-distribution (`out_probs`)."""
    a, b = ood_scores(in_probs), ood_scores(out_probs)
    return {name: auroc(a[name], b[name]) for name in SCORES}
