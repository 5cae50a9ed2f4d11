"""Did distillation help? The KD student against its baseline (same architecture, trained without a
teacher) on the same test images: the accuracy difference, a paired bootstrap interval over the test
images, and an exact McNemar test, with a plain verdict.

Paired: both models see the same images, so what varies between resamples is which images are drawn;
an image both get right (or both wrong) adds nothing to the difference. Resampling n images with
replacement and counting those only the student gets right (B) and only the baseline gets right (C)
is a multinomial draw over {B, C, neither}: drawing those counts directly is the same bootstrap
distribution of (B - C) / n as drawing image indices, without an n x resamples index array.
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def paired_bootstrap(student_correct: np.ndarray, baseline_correct: np.ndarray, *, resamples: int = RESAMPLES,
                     level: float = LEVEL, seed: int = SEED) -> dict[str, Any]:
    """Accuracy difference (student - baseline) and its percentile bootstrap interval; the verdict says
    "KD helped" / "KD hurt" when the interval excludes 0, "within noise" otherwise."""
    a = np.asarray(student_correct, dtype=bool)
    b = np.asarray(baseline_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length 1-D correctness vectors, got {a.shape} and {b.shape}")
    n = a.size
    only_student, only_baseline = int(np.sum(a & ~b)), int(np.sum(~a & b))
    rng = np.random.default_rng(seed)
    probs = [only_student / n, only_baseline / n, 1 - (only_student + only_baseline) / n]
    counts = rng.multinomial(n, probs, size=resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(diffs, [tail, 1 - tail]))
    diff = (only_student - only_baseline) / n
    return {"method": "paired bootstrap over test images (percentile interval)", "resamples": resamples,
            "seed": seed, "level": level, "images": n, "student_accuracy": float(a.mean()),
            "baseline_accuracy": float(b.mean()), "difference": diff, "low": low, "high": high,
            "only_student_right": only_student, "only_baseline_right": only_baseline,
            "mcnemar_p": mcnemar_exact(only_student, only_baseline), "verdict": verdict(low, high)}


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "KD helped"
    if high < 0:
        return "KD hurt"
    return "within noise"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each of the b + c discordant images is
    equally likely to favour either model, so min(b, c) is Binomial(b + c, 1/2)."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(comb(m, k) for k in range(min(b, c) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def sentence(result: dict[str, Any], student: str = "student", baseline: str = "baseline") -> str:
    """One line for people: the verdict first, then the numbers it rests on."""
    pt = 100
    return (f"**{result['verdict']}**: {student} {result['student_accuracy'] * pt:.2f} % vs {baseline} "
            f"{result['baseline_accuracy'] * pt:.2f} %, difference {result['difference'] * pt:+.2f} pt, "
            f"{result['level']:.0%} interval [{result['low'] * pt:+.2f}, {result['high'] * pt:+.2f}] pt "
            f"({result['method']}, {result['resamples']} resamples, seed {result['seed']}, "
            f"{result['images']} images; exact McNemar p = {result['mcnemar_p']:.3g}; "
            f"{result['only_student_right']} images only {student} gets right, "
            f"{result['only_baseline_right']} only {baseline})")
