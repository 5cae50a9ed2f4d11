"""The bench's decision aids on hand-made inputs: the KD-vs-baseline interval (against a binomial oracle
and hand-computed cases), the exact McNemar p-value, the timing-stability flag, the reliability plot's
few-sample bins and the accuracy-vs-latency plot."""

from __future__ import annotations

import numpy as np
import pytest

from kdedge.bench.kd_gain import mcnemar_exact, paired_bootstrap
from kdedge.bench.timing import stability_flags


def pairs(both: int, only_student: int, only_baseline: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    s = [True] * both + [True] * only_student + [False] * only_baseline + [False] * neither
    b = [True] * both + [False] * only_student + [True] * only_baseline + [False] * neither
    return np.array(s), np.array(b)


def test_one_sided_case_matches_the_binomial_quantiles():
    # the student is right wherever the baseline is, and on k more of n images: each resampled
    # difference is Binomial(n, k/n) / n exactly, so the bootstrap's percentiles are binomial quantiles
    scipy_stats = pytest.importorskip("scipy.stats")
    n, k = 400, 40
    s, b = pairs(300, k, 0, n - 300 - k)
    got = paired_bootstrap(s, b, resamples=20000, seed=1)
    low = scipy_stats.binom.ppf(0.025, n, k / n) / n
    high = scipy_stats.binom.ppf(0.975, n, k / n) / n
    assert got["difference"] == pytest.approx(k / n)
    assert got["low"] == pytest.approx(low, abs=1.5 / n) and got["high"] == pytest.approx(high, abs=1.5 / n)
    assert got["verdict"] == "KD helped"


def test_symmetric_case_is_within_noise_and_centred():
    s, b = pairs(200, 30, 30, 40)
    got = paired_bootstrap(s, b, resamples=4000, seed=0)
    assert got["difference"] == 0 and got["verdict"] == "within noise"
    assert got["low"] < 0 < got["high"]
    assert got["low"] == pytest.approx(-got["high"], abs=1.5 / 300)  # symmetric up to one image
    # normal approximation of the paired difference: sd = sqrt((b + c) / n^2) = sqrt(60) / 300
    assert got["high"] == pytest.approx(1.96 * np.sqrt(60) / 300, rel=0.15)
    assert got["mcnemar_p"] == 1.0


def test_all_disagreements_one_way_have_a_point_interval():
    s, b = pairs(0, 5, 0, 0)
    assert paired_bootstrap(s, b)["low"] == paired_bootstrap(s, b)["high"] == 1.0
    worse = paired_bootstrap(*pairs(10, 0, 20, 0))
    assert worse["verdict"] == "KD hurt" and worse["high"] < 0


def test_bootstrap_is_seeded_and_checks_its_input():
    s, b = pairs(50, 7, 4, 9)
    assert paired_bootstrap(s, b, seed=3) == paired_bootstrap(s, b, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap(s, b[:-1])


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)           # 2 * P(X <= 0), X ~ Bin(6, 1/2)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)     # 2 * (1 + 10) / 2^10
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0


def timing(batch: int, median: float, p90: float) -> dict:
    return {"batch": batch, "median_ms": median, "p10_ms": median * 0.95, "p90_ms": p90,
            "images_per_s": batch / (median / 1000)}


def test_stability_flags_spread_and_batching_that_costs_throughput():
    assert stability_flags({"batch1": timing(1, 1.0, 1.2), "batch64": timing(64, 20.0, 22.0)}) == []
    spread = stability_flags({"batch1": timing(1, 1.0, 1.6), "batch64": timing(64, 20.0, 22.0)})
    assert spread == ["batch 1: p90/median 1.60 (> 1.5)"]
    # batch 64 at 80 ms: 800 img/s, below batch 1's 1,000 img/s
    slower = stability_flags({"batch1": timing(1, 1.0, 1.1), "batch64": timing(64, 80.0, 85.0)})
    assert slower == ["batch 64: 800 img/s, below batch 1's 1,000 img/s"]


def test_reliability_bins_with_few_images_are_drawn_hollow(tmp_path):
    from kdedge.metrics import CalibrationBins
    from kdedge.plots import few_sample_bins, reliability_diagram

    edges = [0.0, 0.25, 0.5, 0.75, 1.0]
    bins = CalibrationBins(edges=edges, counts=[0, 3, 400, 597], confidence=[0.0, 0.4, 0.6, 0.9],
                           accuracy=[0.0, 0.0, 0.6, 0.9])
    assert few_sample_bins(bins) == [False, True, False, False]  # 3 < max(10, 1 % of 1000)
    fig = reliability_diagram({"m": bins}, tmp_path / "r.png", title="t")
    [points] = [c for c in fig.axes[0].collections if len(c.get_offsets()) == 3]
    faces = points.get_facecolors()
    assert faces[0][3] == 0 and faces[1][3] > 0 and faces[2][3] > 0  # the 3-image bin is hollow
    sizes = points.get_sizes()
    assert sizes[0] < sizes[1] < sizes[2]  # area grows with the count
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_tradeoff_plot_rings_the_recommendation(tmp_path):
    from kdedge.plots import tradeoff_plot

    points = [{"model": m, "runtime": rt, "family": rt.removesuffix("-int8"), "precision": p, "latency_ms": ms,
               "accuracy": acc, "size_bytes": 1000, "gate_failed": rt == "ort-int8"}
              for m, rt, p, ms, acc in (("student", "ort", "fp32", 1.0, 0.9), ("student", "ort-int8", "int8", 0.5, 0.89),
                                        ("teacher", "torch", "fp32", 4.0, 0.92))]
    fig = tradeoff_plot(points, tmp_path / "t.png", title="t", xlabel="ms", min_accuracy=0.91,
                        chosen=("student", "ort-int8"), runner_up=("student", "ort"))
    ax = fig.axes[0]
    rings = [c for c in ax.collections if c.get_sizes()[0] == 900]
    assert [tuple(c.get_offsets()[0]) for c in rings] == [(0.5, 89.0), (1.0, 90.0)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "recommended" in legend and any("†" in t for t in legend)
    assert ax.get_xscale() == "log"
    assert (tmp_path / "t.png").is_file()
