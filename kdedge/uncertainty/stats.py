"""The math of MC dropout, as pure functions on tensors: per-pass probabilities -> summary, metrics, MUPE.

Definitions (N passes, C classes, p_k the softmax of pass k, p̄ = (1/N) Σ_k p_k):

* confidence = max_c p̄_c; prediction = argmax_c p̄_c (first index on ties);
* entropy (predictive entropy, nats) = −Σ_c p̄_c log p̄_c, with 0·log 0 = 0;
* variance = (1/C) Σ_c Var_k(p_{k,c}), the per-class variance of the probabilities across passes
  (population variance, 1/N) averaged over classes -- the headline "variance";
* predicted_variance = Var_k(p_{k,ŷ}) for ŷ the MC prediction (population variance);
* mutual_information = entropy − (1/N) Σ_k H(p_k) (BALD; the epistemic part of the entropy).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from kdedge.metrics import accuracy, calibration_bins

# float32's smallest normal: -log of a probability that underflowed to 0 is large but finite
_TINY = float(torch.finfo(torch.float32).tiny)


def _entropy(p: Tensor) -> Tensor:
    """Entropy over the last dim in nats, 0·log 0 = 0 (xlogy does exactly that)."""
    return -torch.special.xlogy(p, p).sum(-1)


def summarise_passes(probs: Tensor) -> dict[str, Tensor]:
    """Per-sample MC summaries from the softmax outputs of every pass, `probs` [N, B, C].

    Accumulated in float64 (the mean of 100 float32 softmaxes keeps its last bits); `mean_probs` is
    returned as float32 like any other probabilities of the project, the scalars per sample as float64.
    """
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must have shape [N passes, B, C] with N >= 1, got {tuple(probs.shape)}")
    p = probs.double()
    mean = p.mean(0)
    var = p.var(0, unbiased=False)  # [B, C]
    conf, pred = mean.max(1)
    entropy = _entropy(mean)
    # one log of every pass serves both the per-pass entropies and the mean log-probabilities; a 0
    # probability counts as float32 tiny, and 0 · log(tiny) = 0 as in xlogy
    log_p = p.clamp_min(_TINY).log()
    return {
        "mean_probs": mean.float(),
        "confidence": conf,
        "entropy": entropy,
        "variance": var.mean(1),
        "predicted_variance": var.gather(1, pred.unsqueeze(1)).squeeze(1),
        "mutual_information": (entropy + (p * log_p).sum(-1).mean(0)).clamp_min(0.0),  # ≥ 0 up to rounding
        # the sufficient statistic of a Dirichlet fitted to the passes (kdedge/losses/mc_kd_dirichlet.py)
        "mean_log_probs": log_p.mean(0).float(),
    }


def nll_from_probs(probs: Tensor, labels: Tensor) -> float:
    """Mean −log p[y] of probabilities (not logits), float64; a 0 probability counts as float32 tiny."""
    picked = probs.double().gather(1, labels.to(probs.device).long().unsqueeze(1)).squeeze(1)
    return float(-picked.clamp_min(_TINY).log().mean())


def mc_metrics_from(mean_probs: Tensor, labels: Tensor, per_sample: dict[str, Tensor], *,
                    n_bins: int = 10) -> dict[str, float]:
    """Accuracy, NLL, ECE/MCE (kdedge.metrics' textbook binning) of the MC-averaged
    predictions, and the mean of each per-sample uncertainty in `per_sample`."""
    bins = calibration_bins(mean_probs, labels, n_bins)  # validates shapes, labels and [0, 1]
    out = {
        "n": float(labels.shape[0]),
        "accuracy": accuracy(mean_probs, labels),
        "nll": nll_from_probs(mean_probs, labels),
        "ece": bins.ece,
        "mce": bins.mce,
    }
    for name in ("confidence", "entropy", "variance", "predicted_variance", "mutual_information"):
        if name in per_sample:
            out[f"mean_{name}"] = float(per_sample[name].double().mean())
    return out


def mupe(conf_teacher: Tensor | Sequence[float], conf_student: Tensor | Sequence[float]) -> float:
    """Mean uncertainty prediction error: mean over samples of (conf_teacher − conf_student)²,
    conf being each model's max MC-averaged probability on the same samples, in the same order."""
    t = torch.as_tensor(conf_teacher, dtype=torch.float64).cpu()
    s = torch.as_tensor(conf_student, dtype=torch.float64).cpu()
    if t.ndim != 1 or t.shape != s.shape:
        raise ValueError(f"MUPE needs two 1-D confidence vectors of equal length, got {tuple(t.shape)} "
                         f"and {tuple(s.shape)}")
    if t.numel() == 0:
        raise ValueError("MUPE of an empty set is undefined: pass at least one sample")
    if not (torch.isfinite(t).all() and torch.isfinite(s).all()):
        raise ValueError("confidences contain NaN or infinite values")
    return float(((t - s) ** 2).mean())


def mupe_parts(conf_teacher: Tensor, conf_student: Tensor, pred_teacher: Tensor, pred_student: Tensor) -> dict[str, float]:
    """Where MUPE comes from. With d = conf_student − conf_teacher per sample, MUPE = mean(d²) =
    bias² + variance (bias = mean d, variance = mean (d − bias)²: a student that is uniformly over- or
    underconfident only adds bias², which a temperature can remove); `disagreement` is the share of
    samples whose predicted classes differ and `from_disagreement` the share of MUPE they carry."""
    value = mupe(conf_teacher, conf_student)
    d = torch.as_tensor(conf_student, dtype=torch.float64).cpu() - torch.as_tensor(conf_teacher, dtype=torch.float64).cpu()
    differ = torch.as_tensor(pred_teacher).cpu() != torch.as_tensor(pred_student).cpu()
    if differ.shape != d.shape:
        raise ValueError(f"predictions must be 1-D like the confidences, got {tuple(differ.shape)} and {tuple(d.shape)}")
    bias = float(d.mean())
    total = float((d ** 2).sum())
    return {"value": value, "bias": bias, "bias_squared": bias * bias, "variance": float(((d - bias) ** 2).mean()),
            "disagreement": float(differ.double().mean()),
            "from_disagreement": float((d[differ] ** 2).sum()) / total if total > 0 else 0.0}
