"""Metrics against independent oracles: torchmetrics for ECE/MCE, torch's cross_entropy for NLL,
hand counts and hand arithmetic for the rest."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from kdedge.metrics import (
    CalibrationBins,
    accuracy,
    calibration_bins,
    classification_report,
    ece,
    mce,
    nll,
)


def tm_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> float:
    c = probs.shape[1]
    return float(multiclass_calibration_error(probs, labels, num_classes=c, n_bins=n_bins, norm="l1"))


def tm_mce(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> float:
    c = probs.shape[1]
    return float(multiclass_calibration_error(probs, labels, num_classes=c, n_bins=n_bins, norm="max"))


def random_case(n: int, c: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * scale
    # labels agree with the argmax ~60% of the time so that bins have mixed accuracy
    noise = torch.randint(0, c, (n,), generator=g)
    keep = torch.rand(n, generator=g) < 0.6
    labels = torch.where(keep, logits.argmax(1), noise)
    return logits, labels


# ---- (a) random logits: several sizes, class counts, seeds, bin counts --------------------------------
# torchmetrics accumulates bin sums in float32 (ours are float64): its rounding is ~1e-7 here but passes
# 1e-6 near N = 1e5, so N stays small.
@pytest.mark.parametrize(
    "n,c,seed,scale",
    [(1, 2, 0, 1.0), (7, 3, 1, 2.0), (100, 10, 2, 3.0), (1000, 10, 3, 5.0), (2000, 2, 4, 1.0), (2000, 100, 5, 4.0)],
)
@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_mce_match_torchmetrics_random(n: int, c: int, seed: int, scale: float, n_bins: int) -> None:
    logits, labels = random_case(n, c, seed, scale)
    for dtype in (torch.float32, torch.float64):
        probs = torch.softmax(logits.to(dtype), dim=1)
        assert ece(probs, labels, n_bins) == pytest.approx(tm_ece(probs, labels, n_bins), abs=1e-6)
        assert mce(probs, labels, n_bins) == pytest.approx(tm_mce(probs, labels, n_bins), abs=1e-6)


# ---- (b) real logits: logistic regression on scikit-learn digits ---------------------------------------
@pytest.fixture(scope="module")
def digits_logits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.5, random_state=0, stratify=y)
    with threadpool_limits(1):  # BLAS threads on 2 busy cores turn a 50 ms fit into seconds
        clf = LogisticRegression(max_iter=300, C=0.05).fit(x_tr, y_tr)
    logits = torch.tensor(clf.decision_function(x_te), dtype=torch.float32)
    return logits, torch.tensor(y_te)


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_mce_match_torchmetrics_real_digits(digits_logits, n_bins: int) -> None:
    logits, labels = digits_logits
    assert 0.85 < accuracy(logits, labels) < 1.0  # a real, imperfect classifier
    probs = torch.softmax(logits, dim=1)
    assert ece(probs, labels, n_bins) == pytest.approx(tm_ece(probs, labels, n_bins), abs=1e-6)
    assert mce(probs, labels, n_bins) == pytest.approx(tm_mce(probs, labels, n_bins), abs=1e-6)
    # the report softmaxes in float64, torchmetrics (given logits) in float32: still equal to 1e-6
    report = classification_report(logits, labels, n_bins)
    assert report["ece"] == pytest.approx(tm_ece(logits, labels, n_bins), abs=1e-6)
    assert report["mce"] == pytest.approx(tm_mce(logits, labels, n_bins), abs=1e-6)


# ---- (c) edge cases ---------------------------------------------------------------------------------------
def rows_with_confidence(conf: torch.Tensor, c: int) -> torch.Tensor:
    """Probability rows whose max (class 0) is exactly `conf`; the rest spread evenly."""
    rest = ((1 - conf.double()) / (c - 1)).to(conf.dtype)
    probs = rest.unsqueeze(1).repeat(1, c)
    probs[:, 0] = conf
    assert bool((probs.max(1).values == conf).all()) and bool((probs.argmax(1) == 0).all())
    return probs


@pytest.mark.parametrize("n_bins", [3, 7, 10, 15])
def test_confidences_exactly_on_edges(n_bins: int) -> None:
    # the edges as torchmetrics builds them (float32 linspace; != float32(k/M) for M = 3, 7, 15)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)
    c = 2 * n_bins + 2  # enough classes that 1/c is below the first inner edge we use
    inner = edges[(edges > 1.0 / c) & (edges < 1.0)]
    conf = inner.repeat_interleave(3)
    labels = torch.tensor([0, 1, 0] * len(inner))  # 2/3 correct in every bin
    probs = rows_with_confidence(conf, c)
    assert ece(probs, labels, n_bins) == pytest.approx(tm_ece(probs, labels, n_bins), abs=1e-6)
    assert mce(probs, labels, n_bins) == pytest.approx(tm_mce(probs, labels, n_bins), abs=1e-6)
    # left-closed: a confidence equal to edges[k] goes into bin k, not bin k-1
    bins = calibration_bins(probs, labels, n_bins)
    for e in inner.tolist():
        k = min(range(n_bins + 1), key=lambda j: abs(edges[j].item() - e))
        assert bins.counts[k] == 3


def test_confidence_exactly_one_is_its_own_bin() -> None:
    # float32 softmax saturates to exactly 1.0 for margins above ~17
    logits = torch.tensor([[40.0, 0.0, 0.0]] * 6 + [[2.0, 0.0, 0.0]] * 4 + [[1.0, 1.5, 0.0]] * 3)
    labels = torch.tensor([0, 0, 0, 0, 1, 2] + [0, 0, 0, 1] + [1, 0, 1])
    probs = torch.softmax(logits, dim=1)
    assert int((probs.max(1).values == 1.0).sum()) == 6
    got_ece, got_mce = ece(probs, labels), mce(probs, labels)
    assert got_ece == pytest.approx(tm_ece(probs, labels), abs=1e-6)
    assert got_mce == pytest.approx(tm_mce(probs, labels), abs=1e-6)
    bins = calibration_bins(probs, labels)
    assert bins.saturated_count == 6 and bins.saturated_accuracy == pytest.approx(4 / 6)
    assert bins.counts[-1] == 6 and sum(bins.counts) == 13  # shown in the closed last bin
    # the {1.0} bin kept apart: merging it into [0.9, 1) would give another number in general
    assert got_mce == pytest.approx(1 - 4 / 6, abs=1e-7)

    # mixed: saturated samples and others in [0.9, 1.0) share the last displayed bin
    logits2 = torch.cat([logits, torch.tensor([[3.5, 0.0, 0.0]] * 5)])
    labels2 = torch.cat([labels, torch.tensor([0, 0, 0, 0, 0])])
    probs2 = torch.softmax(logits2, dim=1)
    assert ece(probs2, labels2) == pytest.approx(tm_ece(probs2, labels2), abs=1e-6)
    assert mce(probs2, labels2) == pytest.approx(tm_mce(probs2, labels2), abs=1e-6)
    b2 = calibration_bins(probs2, labels2)
    assert b2.counts[-1] == 11 and b2.saturated_count == 6


def test_confidence_zero_goes_to_first_bin() -> None:
    # an all-zero row is not a distribution, but it pins down the rule: 0 lands in bin 0 (torchmetrics too)
    probs = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.8, 0.2]])
    labels = torch.tensor([0, 1, 0])
    bins = calibration_bins(probs, labels)
    assert bins.counts[0] == 2 and bins.accuracy[0] == 0.5 and bins.confidence[0] == 0.0
    assert ece(probs, labels) == pytest.approx(tm_ece(probs, labels), abs=1e-6)
    assert mce(probs, labels) == pytest.approx(tm_mce(probs, labels), abs=1e-6)


def test_all_in_one_bin() -> None:
    g = torch.Generator().manual_seed(7)
    conf = 0.4 + 0.099 * torch.rand(50, generator=g)  # all in [0.4, 0.5)
    labels = torch.randint(0, 2, (50,), generator=g) * 3  # class 0 or 3 (of 5)
    probs = rows_with_confidence(conf, 5)
    bins = calibration_bins(probs, labels)
    assert bins.counts == [0, 0, 0, 0, 50, 0, 0, 0, 0, 0]
    acc = float((labels == 0).double().mean())
    assert ece(probs, labels) == pytest.approx(abs(acc - float(conf.double().mean())), abs=1e-7)
    assert ece(probs, labels) == pytest.approx(mce(probs, labels), abs=1e-12)  # one bin: ECE = MCE
    assert ece(probs, labels) == pytest.approx(tm_ece(probs, labels), abs=1e-6)
    assert mce(probs, labels) == pytest.approx(tm_mce(probs, labels), abs=1e-6)


def test_perfect_one_hot_predictions_have_zero_error() -> None:
    probs = torch.eye(4)[[0, 1, 2, 3, 1]]
    labels = torch.tensor([0, 1, 2, 3, 1])
    assert ece(probs, labels) == 0.0 and mce(probs, labels) == 0.0
    assert tm_ece(probs, labels) == 0.0


# ---- hand-computed tiny case ------------------------------------------------------------------------------
def test_ece_by_hand() -> None:
    # 5 samples, 4 classes, 10 bins; class 0 holds the confidence, label 0 = correct.
    #   bin 9 [0.9, 1.0): conf 0.91 (correct), 0.95 (wrong) -> acc 1/2, conf 0.93,  gap 0.43,  weight 2/5
    #   bin 6 [0.6, 0.7): conf 0.65 (correct)              -> acc 1,   conf 0.65,  gap 0.35,  weight 1/5
    #   bin 3 [0.3, 0.4): conf 0.35 (wrong), 0.38 (correct) -> acc 1/2, conf 0.365, gap 0.135, weight 2/5
    # ECE = 0.4*0.43 + 0.2*0.35 + 0.4*0.135 = 0.172 + 0.070 + 0.054 = 0.296;  MCE = 0.43
    conf = torch.tensor([0.91, 0.95, 0.65, 0.35, 0.38], dtype=torch.float64)
    labels = torch.tensor([0, 2, 0, 1, 0])
    probs = rows_with_confidence(conf, 4)
    assert ece(probs, labels) == pytest.approx(0.296, abs=1e-7)
    assert mce(probs, labels) == pytest.approx(0.43, abs=1e-7)
    bins = calibration_bins(probs, labels)
    assert bins.edges == pytest.approx([k / 10 for k in range(11)])
    assert bins.counts == [0, 0, 0, 2, 0, 0, 1, 0, 0, 2]
    assert bins.accuracy == pytest.approx([0, 0, 0, 0.5, 0, 0, 1.0, 0, 0, 0.5])
    assert bins.confidence == pytest.approx([0, 0, 0, 0.365, 0, 0, 0.65, 0, 0, 0.93], abs=1e-7)


# ---- CalibrationBins ---------------------------------------------------------------------------------------
def test_bins_dict_round_trip_keeps_exact_ece() -> None:
    logits, labels = random_case(500, 5, 11, scale=12.0)  # many saturated confidences
    probs = torch.softmax(logits, dim=1)
    bins = calibration_bins(probs, labels)
    assert bins.saturated_count > 0
    d = bins.to_dict()
    assert set(d) >= {"edges", "counts", "accuracy", "confidence", "n", "ece", "mce"}
    assert d["n"] == 500 and d["ece"] == pytest.approx(tm_ece(probs, labels), abs=1e-6)
    again = CalibrationBins.from_dict(d)
    assert again == bins and again.ece == bins.ece


def test_bins_reject_inconsistent_lengths() -> None:
    with pytest.raises(ValueError, match="M\\+1 edges"):
        CalibrationBins(edges=[0.0, 1.0], counts=[1, 2], accuracy=[0.0, 0.0], confidence=[0.0, 0.0])


# ---- accuracy and NLL -----------------------------------------------------------------------------------
def test_accuracy_is_a_hand_count() -> None:
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    labels = torch.tensor([1, 1, 1, 0, 0])  # right, wrong, right, right, right (tie -> class 0)
    assert accuracy(scores, labels) == pytest.approx(4 / 5)
    assert accuracy(torch.log(scores), labels) == pytest.approx(4 / 5)  # logits give the same argmax


@pytest.mark.parametrize("n,c,seed", [(1, 2, 0), (64, 10, 1), (1000, 100, 2)])
def test_nll_matches_cross_entropy(n: int, c: int, seed: int) -> None:
    logits, labels = random_case(n, c, seed, scale=5.0)
    expect = float(torch.nn.functional.cross_entropy(logits.double(), labels))
    assert nll(logits, labels) == pytest.approx(expect, rel=1e-12)
    # float64 inside: the float32 torch value agrees only to float32 precision
    assert nll(logits, labels) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)


def test_classification_report_keys_and_values() -> None:
    logits, labels = random_case(300, 7, 9)
    r = classification_report(logits, labels)
    assert set(r) == {"accuracy", "nll", "ece", "mce", "n"}
    assert r["n"] == 300
    assert r["accuracy"] == accuracy(logits, labels) and r["nll"] == nll(logits, labels)
    assert r["ece"] == pytest.approx(tm_ece(logits, labels), abs=1e-6)
    assert all(isinstance(v, (int, float)) for v in r.values())


# ---- validation ---------------------------------------------------------------------------------------------
def test_validation_errors() -> None:
    probs = torch.full((4, 3), 1 / 3)
    labels = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="shape mismatch"):
        ece(probs, labels[:3])
    with pytest.raises(ValueError, match="n_bins"):
        ece(probs, labels, n_bins=0)
    with pytest.raises(ValueError, match="n_bins"):
        calibration_bins(probs, labels, n_bins=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        mce(probs[0], labels)
    with pytest.raises(ValueError, match="labels must lie"):
        ece(probs, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="not logits"):
        ece(probs * 5, labels)
    with pytest.raises(ValueError, match="integer"):
        accuracy(probs, labels.float())
    with pytest.raises(ValueError, match="N=0"):
        nll(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        nll(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
