"""Parity of an exported model with its reference: pure functions over logits, and the gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Parity:
    images: int
    agreement: float          # share of images where both predict the same class
    reference_accuracy: float
    accuracy: float
    accuracy_drop: float      # reference - export, in [0, 1] units (0.005 = 0.5 pt)
    max_abs_diff: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParityThresholds:
    min_agreement: float = 0.99
    max_accuracy_drop: float = 0.005


def parity(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> Parity:
    ref_pred, cand_pred = reference.argmax(1), candidate.argmax(1)
    ref_acc = float((ref_pred == labels).mean())
    acc = float((cand_pred == labels).mean())
    return Parity(images=int(len(labels)), agreement=float((ref_pred == cand_pred).mean()),
                  reference_accuracy=ref_acc, accuracy=acc, accuracy_drop=ref_acc - acc,
                  max_abs_diff=float(np.abs(reference - candidate).max()) if len(labels) else 0.0)


def gate_failures(result: Parity, thresholds: ParityThresholds) -> list[str]:
    """Why an INT8 export falls short of the thresholds (empty when it passes)."""
    failures = []
    eps = 1e-9  # 0.818 - 0.813 is 0.0050000000000000044: an exact 0.5 pt drop must meet a 0.5 pt limit
    if result.agreement < thresholds.min_agreement - eps:
        failures.append(f"top-1 agreement {result.agreement:.2%} < {thresholds.min_agreement:.2%}")
    if result.accuracy_drop > thresholds.max_accuracy_drop + eps:
        failures.append(f"accuracy drop {result.accuracy_drop * 100:.2f} pt > {thresholds.max_accuracy_drop * 100:.2f} pt")
    return failures
