"""Top-label calibration: equal-width confidence bins, ECE and MCE.

Binning rule (chosen to agree exactly with torchmetrics' `multiclass_calibration_error`, the project's
independent oracle):

* the confidence of a sample is its max probability, rounded to float32; the predicted class is the
  argmax (first index on ties);
* edges are `torch.linspace(0, 1, M + 1)` in float32 — NOT float32(k / M), which differs for some M
  (e.g. M = 15) — and a confidence c goes to bin m with edges[m] <= c < edges[m + 1] (left-closed);
  so a confidence exactly on an inner edge belongs to the bin above it, and 0 goes to bin 0;
* a confidence exactly 1.0 falls past the last half-open bin: torchmetrics keeps those samples in a
  bin of their own, {1.0}, and so do ECE and MCE here.

`CalibrationBins` shows M bins, the last one closed ([edges[M-1], 1]) so that counts sum to n and the
saturated samples appear in a plot; it also records how many of them sat at exactly 1.0, which is all
it takes to recompute the torchmetrics-exact ECE/MCE from the bins alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from kdedge.metrics._checks import check_n_bins, check_probs, check_scores_labels


@dataclass(frozen=True)
class CalibrationBins:
    edges: list[float]  # M+1 equal-width edges over [0, 1]
    counts: list[int]  # samples per bin (the last bin includes confidences == 1.0)
    accuracy: list[float]  # per-bin accuracy (0.0 where empty)
    confidence: list[float]  # per-bin mean max-prob (0.0 where empty)
    saturated_count: int = 0  # of counts[-1], samples whose confidence is exactly 1.0
    saturated_accuracy: float = 0.0  # accuracy of those samples (0.0 when there are none)

    def __post_init__(self) -> None:
        m = len(self.counts)
        if m < 1 or len(self.edges) != m + 1 or len(self.accuracy) != m or len(self.confidence) != m:
            raise ValueError(
                f"CalibrationBins needs M+1 edges and M counts/accuracy/confidence, got {len(self.edges)} edges, "
                f"{m} counts, {len(self.accuracy)} accuracy, {len(self.confidence)} confidence"
            )
        if not 0 <= self.saturated_count <= self.counts[-1]:
            raise ValueError(
                f"saturated_count ({self.saturated_count}) must lie in [0, counts[-1]={self.counts[-1]}]"
            )

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    @property
    def ece(self) -> float:
        """Σ (|B_m|/n)·|acc(B_m) − conf(B_m)| over torchmetrics' bins (the {1.0} bin kept apart)."""
        n = self.n
        if n == 0:
            return 0.0
        return float(sum(cnt / n * abs(acc - conf) for cnt, acc, conf in self._exact_bins()))

    @property
    def mce(self) -> float:
        """max over non-empty bins of |acc(B_m) − conf(B_m)| (0.0 when there are no samples)."""
        return float(max((abs(acc - conf) for cnt, acc, conf in self._exact_bins() if cnt > 0), default=0.0))

    def _exact_bins(self) -> list[tuple[int, float, float]]:
        """(count, accuracy, confidence) per bin with the confidence == 1.0 samples split off the last bin."""
        bins = list(zip(self.counts[:-1], self.accuracy[:-1], self.confidence[:-1]))
        total, s = self.counts[-1], self.saturated_count
        rest = total - s
        if rest > 0:
            # undo the merge: correct counts are integers, confidence sums lose only float64 rounding
            correct = round(self.accuracy[-1] * total) - round(self.saturated_accuracy * s)
            bins.append((rest, correct / rest, (self.confidence[-1] * total - s) / rest))
        if s > 0:
            bins.append((s, self.saturated_accuracy, 1.0))
        return bins

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(n=self.n, ece=self.ece, mce=self.mce)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibrationBins":
        """Inverse of `to_dict` (derived keys n/ece/mce are ignored), e.g. to re-plot a saved report."""
        return cls(
            edges=[float(x) for x in d["edges"]],
            counts=[int(x) for x in d["counts"]],
            accuracy=[float(x) for x in d["accuracy"]],
            confidence=[float(x) for x in d["confidence"]],
            saturated_count=int(d.get("saturated_count", 0)),
            saturated_accuracy=float(d.get("saturated_accuracy", 0.0)),
        )


def calibration_bins(probs: Tensor, labels: Tensor, n_bins: int = 10) -> CalibrationBins:
    """Bin the max-probability confidences of `probs` [N, C] into `n_bins` equal-width bins (rule above)."""
    check_scores_labels(probs, labels, what="probs")
    check_probs(probs)
    check_n_bins(n_bins)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels.to(pred.device)).cpu()
    conf32 = conf.detach().cpu().float()  # float32 rounding decides the bin, as in torchmetrics
    edges32 = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float32)
    # index of the last edge <= c; c == 1.0 lands on index n_bins, the extra {1.0} bin
    idx = torch.searchsorted(edges32, conf32, right=True) - 1
    size = n_bins + 1
    counts = torch.bincount(idx, minlength=size)
    hits = torch.bincount(idx, weights=correct.double(), minlength=size)
    conf_sum = torch.bincount(idx, weights=conf32.double(), minlength=size)  # float64 sums

    # merge the {1.0} bin into the last closed bin for the M-bin view
    sat_count, sat_hits = int(counts[-1]), float(hits[-1])
    counts = counts[:-1].clone()
    hits = hits[:-1].clone()
    conf_sum = conf_sum[:-1].clone()
    counts[-1] += sat_count
    hits[-1] += sat_hits
    conf_sum[-1] += float(sat_count)  # their confidence is exactly 1.0
    denom = counts.double().clamp(min=1)  # empty bins report 0.0
    return CalibrationBins(
        edges=[k / n_bins for k in range(n_bins + 1)],
        counts=[int(x) for x in counts],
        accuracy=[float(x) for x in hits / denom],
        confidence=[float(x) for x in conf_sum / denom],
        saturated_count=sat_count,
        saturated_accuracy=sat_hits / sat_count if sat_count else 0.0,
    )


def ece(probs: Tensor, labels: Tensor, n_bins: int = 10) -> float:
    """Expected calibration error Σ (|B_m|/n)·|acc(B_m) − conf(B_m)| of softmax probabilities `probs`."""
    return calibration_bins(probs, labels, n_bins).ece


def mce(probs: Tensor, labels: Tensor, n_bins: int = 10) -> float:
    """Maximum calibration error: the largest |acc(B_m) − conf(B_m)| over non-empty bins."""
    return calibration_bins(probs, labels, n_bins).mce
