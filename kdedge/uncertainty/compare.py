"""MC dropout on a teacher and its students, side by side, and each student's MUPE against the teacher
(seed 000's uncertainty transfer). Shared by `kdedge bench` and the recipe's uncertainty experiment.

Masks: by default each model draws its own dropout masks (stream = its name), so MUPE compares two
independent MC estimates, as seed 000 defines it. `masks="shared"` gives every model the same mask
stream: models whose dropout inputs have the same shapes then draw identical masks (common random
numbers), a lower-variance MUPE that is not comparable with one from independent masks. The result
records which was used.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from kdedge.choices import MUPE_MASKS
from kdedge.inference import batched
from kdedge.metrics import calibration_bins
from kdedge.uncertainty.mc_dropout import McDropoutNotApplicable, mc_dropout_predict, mc_metrics
from kdedge.uncertainty.stats import mupe_parts

DETERMINISTIC = "deterministic (no dropout)"
MASK_NOTES = {
    "independent": "each model draws its own dropout masks (seed 000's MUPE)",
    "shared": "models with equal dropout shapes draw identical masks (common random numbers: lower variance, "
              "not comparable with independent masks)",
}


def _softmax_confidence(model: nn.Module, x: torch.Tensor, device: torch.device,
                        batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, predicted class) of the deterministic model."""
    with torch.inference_mode():
        logits = batched(lambda b: model(b.to(device)).float().cpu(), x, batch)
    conf, pred = torch.softmax(logits.double(), 1).max(1)
    return conf, pred


def compare_mc_dropout(models: Mapping[str, nn.Module], x: torch.Tensor, labels: torch.Tensor, *, samples: int,
                       seed: int, device: torch.device, teacher: str = "teacher", masks: str = "independent",
                       log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """{samples, seed, masks, masks_note, models: {name: MC metrics + reliability bins, or why not applicable},
    mupe: {student: {value, student_confidence}}}. `x` is the normalised test input. A student without
    dropout takes its plain softmax confidence (its MC average) into MUPE, and the result says so; MUPE is
    left out when the teacher itself has no dropout."""
    if masks not in MUPE_MASKS:
        raise ValueError(f"masks must be one of {', '.join(MUPE_MASKS)}, got {masks!r}")
    per_model: dict[str, Any] = {}
    confidence: dict[str, torch.Tensor] = {}
    predicted: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        stream = name if masks == "independent" else ""
        try:
            result = mc_dropout_predict(model.to(device), x, samples=samples, seed=seed, stream=stream,
                                        device=device)
        except McDropoutNotApplicable as exc:
            per_model[name] = {"applicable": False, "reason": str(exc)}
            continue
        metrics = mc_metrics(result, labels)
        per_model[name] = {"applicable": True, "runtime": "torch", **metrics, "split_at": result.split_at,
                           "bins": calibration_bins(result.mean_probs.double(), labels).to_dict()}
        confidence[name] = result.confidence
        predicted[name] = result.mean_probs.argmax(1).cpu()
        log(f"[cyan]MC dropout[/] {name}: {samples} passes ({result.method}), accuracy {metrics['accuracy']:.4f}, "
            f"ECE {metrics['ece']:.4f}")
    out: dict[str, Any] = {"samples": samples, "seed": seed, "masks": masks, "masks_note": MASK_NOTES[masks],
                           "models": per_model}
    if teacher in confidence:
        out["mupe"] = {}
        for name, model in models.items():
            if name == teacher:
                continue
            if name in confidence:
                conf, pred, source = confidence[name], predicted[name], "mc"
            else:
                (conf, pred), source = _softmax_confidence(model, x, device), DETERMINISTIC
            out["mupe"][name] = {**mupe_parts(confidence[teacher], conf, predicted[teacher], pred),
                                 "student_confidence": source}
    return out
