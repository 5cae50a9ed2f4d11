"""Top-label calibration: equal-width confidence bins, ECE and MCE, as the textbook defines them.

Binning rule (Naeini, Cooper & Hauskrecht 2015; Guo, Pleiss, Sun & Weinberger 2017):

* the confidence of a sample is its max probability and the predicted class the argmax (first index
  on ties), both computed in float64 from the given probabilities (float32 inputs convert exactly;
  nothing is rounded to float32 before binning);
* M bins B_m = ((m - 1)/M, m/M], m = 1..M, right-closed, with edges k/M in float64; the first bin
  also holds a confidence of exactly 0, so B_1 = [0, 1/M] and a confidence of exactly 1.0 belongs
  to the last bin B_M -- there is no extra bin for it;
* ECE = Σ_m (|B_m| / n) · |acc(B_m) − conf(B_m)|, MCE = max over non-empty B_m of |acc − conf|.

Not torchmetrics' rule: `multiclass_calibration_error` bins left-closed on float32 confidences and
keeps conf == 1.0 in a bin of its own (open upstream report Lightning-AI/torchmetrics#3510), so one
saturated sample can swing its MCE by the whole bin gap. On confidences strictly inside bins and
below 1.0 the two agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from kdedge.metrics._checks import check_n_bins, check_probs, check_scores_labels


@dataclass(frozen=True)
class CalibrationBins:
    edges: list[float]  # M+1 equal-width edges k/M over [0, 1]
    counts: list[int]  # samples per bin ((m-1)/M, m/M]; bin 0 also holds conf == 0
    accuracy: list[float]  # per-bin accuracy (0.0 where empty)
    confidence: list[float]  # per-bin mean max-prob (0.0 where empty)

    def __post_init__(self) -> None:
        m = len(self.counts)
        if m < 1 or len(self.edges) != m + 1 or len(self.accuracy) != m or len(self.confidence) != m:
            raise ValueError(
                f"CalibrationBins needs M+1 edges and M counts/accuracy/confidence, got {len(self.edges)} edges, "
                f"{m} counts, {len(self.accuracy)} accuracy, {len(self.confidence)} confidence"
            )

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    @property
    def ece(self) -> float:
        """Σ (|B_m|/n)·|acc(B_m) − conf(B_m)| (0.0 when there are no samples)."""
        n = self.n
        if n == 0:
            return 0.0
        return float(sum(cnt / n * abs(acc - conf) for cnt, acc, conf in zip(self.counts, self.accuracy,
                                                                               self.confidence)))

    @property
    def mce(self) -> float:
        """max over non-empty bins of |acc(B_m) − conf(B_m)| (0.0 when there are no samples)."""
        return float(max((abs(acc - conf) for cnt, acc, conf in zip(self.counts, self.accuracy, self.confidence)
                          if cnt > 0), default=0.0))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(n=self.n, ece=self.ece, mce=self.mce)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibrationBins":
        """Inverse of `to_dict` (derived keys n/ece/mce are ignored, and so are the saturated_* keys of
        reports written before the textbook rule), e.g. to re-plot a saved report."""
        return cls(
            edges=[float(x) for x in d["edges"]],
            counts=[int(x) for x in d["counts"]],
            accuracy=[float(x) for x in d["accuracy"]],
            confidence=[float(x) for x in d["confidence"]],
        )


def bin_index(confidence: Tensor, n_bins: int) -> Tensor:
    """0-based bin of each float64 confidence: m - 1 for (m-1)/M < c <= m/M, and 0 for c == 0."""
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins  # k/M, correctly rounded
    # side="left": the first edge >= c, so a confidence on an edge stays in the bin it closes
    idx = torch.searchsorted(edges, confidence.double().contiguous(), side="left") - 1
    return idx.clamp(0, n_bins - 1)


def calibration_bins(probs: Tensor, labels: Tensor, n_bins: int = 10) -> CalibrationBins:
    """Bin the max-probability confidences of `probs` [N, C] into `n_bins` equal-width bins (rule above)."""
    check_scores_labels(probs, labels, what="probs")
    check_probs(probs)
    check_n_bins(n_bins)
    p = probs.detach().cpu().double()
    conf = p.max(dim=1).values
    correct = (p.argmax(dim=1) == labels.cpu()).double()
    idx = bin_index(conf, n_bins)
    counts = torch.bincount(idx, minlength=n_bins)
    hits = torch.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    denom = counts.double().clamp(min=1)  # empty bins report 0.0
    return CalibrationBins(
        edges=[k / n_bins for k in range(n_bins + 1)],
        counts=[int(x) for x in counts],
        accuracy=[float(x) for x in hits / denom],
        confidence=[float(x) for x in conf_sum / denom],
    )


def ece(probs: Tensor, labels: Tensor, n_bins: int = 10) -> float:
    """Expected calibration error Σ (|B_m|/n)·|acc(B_m) − conf(B_m)| of softmax probabilities `probs`."""
    return calibration_bins(probs, labels, n_bins).ece


def mce(probs: Tensor, labels: Tensor, n_bins: int = 10) -> float:
    """Maximum calibration error: the largest |acc(B_m) − conf(B_m)| over non-empty bins."""
    return calibration_bins(probs, labels, n_bins).mce
