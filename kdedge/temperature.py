"""Temperature scaling of a classifier's logits (Guo et al. 2017; seed 003 calibrates the teacher this way).

One scalar T > 0 divides the logits; it is fitted by minimising the NLL on the *validation* split only,
so the test split stays an honest measure of the calibrated model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdedge.metrics import classification_report
from kdedge.metrics._checks import check_scores_labels

T_MIN = 0.05
T_MAX = 100.0
# the optimiser may roam well past the final clamp so that an optimum near it is found exactly,
# but not so far that z / T overflows float64
_LOG_T_BOUND = 20.0


def _nll_at_log_t(logits: Tensor, labels: Tensor, log_t: Tensor) -> Tensor:
    """Mean NLL of softmax(logits / exp(log_t)); differentiable in log_t."""
    logp = torch.log_softmax(logits * torch.exp(-log_t.clamp(-_LOG_T_BOUND, _LOG_T_BOUND)), dim=1)
    return -logp.gather(1, labels.unsqueeze(1)).mean()


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 100) -> float:
    """The T* in [0.05, 100] that minimises NLL(softmax(logits / T)) on (logits, labels).

    Optimises log T (so T stays positive and the problem is well scaled) with L-BFGS and a strong-Wolfe
    line search, in float64. When the NLL keeps falling towards T → 0 (perfectly separated data) or
    T → ∞ (logits carry no information), the result is the clamp bound.
    """
    if isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[0] == 0:
        raise ValueError("cannot fit a temperature on an empty split (N=0)")
    check_scores_labels(logits, labels, what="logits")
    if logits.shape[1] < 2:
        raise ValueError(f"cannot fit a temperature with {logits.shape[1]} class: the NLL does not depend on T")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")

    z = logits.detach().to(torch.float64)
    y = labels.detach().to(device=z.device, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)  # start at T = 1
    opt = torch.optim.LBFGS(
        [log_t],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _nll_at_log_t(z, y, log_t)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = math.exp(float(log_t.detach().clamp(-_LOG_T_BOUND, _LOG_T_BOUND)))
    if not math.isfinite(t):
        raise ValueError("temperature fit diverged (non-finite T); check the logits")
    t = min(max(t, T_MIN), T_MAX)
    # NLL is convex in 1/T, so on [T_MIN, T_MAX] the minimum is the stationary point or a bound. L-BFGS
    # stops once the gradient vanishes, which short of a boundary optimum can be early: check the bounds
    with torch.no_grad():
        best, best_f = t, float(_nll_at_log_t(z, y, torch.tensor(math.log(t), dtype=torch.float64)))
        for bound in (T_MIN, T_MAX):
            f = float(_nll_at_log_t(z, y, torch.tensor(math.log(bound), dtype=torch.float64)))
            if f < best_f:
                best, best_f = bound, f
    return best


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / T, in the logits' dtype."""
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return logits / t


@dataclass(frozen=True)
class CalibrationResult:
    temperature: float
    before: dict[str, dict[str, Any]]  # {"val": classification_report, "test": ...} at T = 1
    after: dict[str, dict[str, Any]]  # the same at T = temperature

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "before": self.before, "after": self.after}


def calibrate(
    val_logits: Tensor,
    val_labels: Tensor,
    test_logits: Tensor,
    test_labels: Tensor,
    n_bins: int = 10,
) -> CalibrationResult:
    """Fit T* on the validation split only, then report metrics before/after on validation and test."""
    check_scores_labels(val_logits, val_labels, what="val_logits")
    check_scores_labels(test_logits, test_labels, what="test_logits")
    if test_logits.shape[1] != val_logits.shape[1]:
        raise ValueError(
            f"val_logits has {val_logits.shape[1]} classes but test_logits has {test_logits.shape[1]}"
        )
    t = fit_temperature(val_logits, val_labels)  # test is never seen by the fit
    splits = {"val": (val_logits, val_labels), "test": (test_logits, test_labels)}
    before = {k: classification_report(z, y, n_bins) for k, (z, y) in splits.items()}
    after = {k: classification_report(apply_temperature(z, t), y, n_bins) for k, (z, y) in splits.items()}
    return CalibrationResult(temperature=t, before=before, after=after)
