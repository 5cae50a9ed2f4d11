"""Metrics against independent oracles: the textbook ECE/MCE rule written out below in plain Python,
netcal's ECE/MCE, torchmetrics (only where its binning agrees with the textbook, see `tm_ece`), torch's
cross_entropy for NLL, hand counts and hand arithmetic for the rest."""

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


def textbook(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> dict:
    """Guo et al. 2017 / Naeini et al. 2015, one sample at a time: M bins ((m-1)/M, m/M] (B_1 also holds 0),
    confidences in float64. Returns per-bin counts, accuracy, confidence and the ECE/MCE."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for row, y in zip(probs.double().tolist(), labels.tolist()):
        conf = max(row)
        pred = row.index(conf)  # first index on ties
        m = 1 if conf == 0 else next(m for m in range(1, n_bins + 1) if (m - 1) / n_bins < conf <= m / n_bins)
        members[m - 1].append((conf, pred == y))
    n = sum(len(b) for b in members)
    counts, accs, confs, gaps = [], [], [], []
    for b in members:
        acc = sum(ok for _, ok in b) / len(b) if b else 0.0
        conf = sum(c for c, _ in b) / len(b) if b else 0.0
        counts.append(len(b)), accs.append(acc), confs.append(conf)
        if b:
            gaps.append((len(b), abs(acc - conf)))
    return {"counts": counts, "accuracy": accs, "confidence": confs,
            "ece": sum(k / n * g for k, g in gaps), "mce": max(g for _, g in gaps)}


def netcal_ece_mce(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> tuple[float, float]:
    """netcal's top-label ECE/MCE, given (confidence, correct) so that it bins the max probability even for
    2 classes. netcal bins with np.histogramdd: left-closed inner bins [a, b), the last one closed, and it
    clips confidences to [eps, 1 - eps]. So it agrees with the textbook on conf == 1.0 and 0, but not on a
    confidence exactly on an inner edge: use it only on inputs without such confidences."""
    netcal = pytest.importorskip("netcal.metrics", reason="netcal (the dev extra's ECE oracle) is not installed")
    p = probs.double()
    conf = p.max(1).values.numpy()
    correct = (p.argmax(1) == labels).long().numpy()
    return (float(netcal.ECE(bins=n_bins).measure(conf, correct)),
            float(netcal.MCE(bins=n_bins).measure(conf, correct)))


def assert_textbook(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10, *, with_netcal: bool = True) -> None:
    want = textbook(probs, labels, n_bins)
    bins = calibration_bins(probs, labels, n_bins)
    # the reliability-diagram bins follow the same rule as the ECE/MCE numbers
    assert bins.counts == want["counts"]
    assert bins.accuracy == pytest.approx(want["accuracy"], abs=1e-12)
    assert bins.confidence == pytest.approx(want["confidence"], abs=1e-12)
    assert ece(probs, labels, n_bins) == pytest.approx(want["ece"], abs=1e-12)
    assert mce(probs, labels, n_bins) == pytest.approx(want["mce"], abs=1e-12)
    if with_netcal:
        n_ece, n_mce = netcal_ece_mce(probs, labels, n_bins)
        assert ece(probs, labels, n_bins) == pytest.approx(n_ece, abs=1e-9)
        assert mce(probs, labels, n_bins) == pytest.approx(n_mce, abs=1e-9)


# torchmetrics' multiclass_calibration_error bins float32 confidences left-closed and keeps conf == 1.0 in an
# extra bin of its own (open report Lightning-AI/torchmetrics#3510): it is an oracle here only on inputs
# whose confidences are all below 1.0 and off the bin edges, which `tm_ece` / `tm_mce` check first.
def _unsaturated(probs: torch.Tensor) -> torch.Tensor:
    conf = probs.float().max(1).values
    assert bool((conf < 1.0).all()), "torchmetrics is no oracle for saturated confidences (torchmetrics#3510)"
    return probs


def tm_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> float:
    c = probs.shape[1]
    return float(multiclass_calibration_error(_unsaturated(probs), labels, num_classes=c, n_bins=n_bins, norm="l1"))


def tm_mce(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> float:
    c = probs.shape[1]
    return float(multiclass_calibration_error(_unsaturated(probs), labels, num_classes=c, n_bins=n_bins, norm="max"))


def random_case(n: int, c: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * scale
    # labels agree with the argmax ~60% of the time so that bins have mixed accuracy
    noise = torch.randint(0, c, (n,), generator=g)
    keep = torch.rand(n, generator=g) < 0.6
    labels = torch.where(keep, logits.argmax(1), noise)
    return logits, labels


# ---- (a) the reproducer: one saturated sample ------------------------------------------------------
def test_saturated_confidence_belongs_to_the_last_bin() -> None:
    # sample 1: predicts class 0 at 0.95, label 1 (wrong); sample 2: predicts class 0 at exactly 1.0 (right).
    # Textbook: both in (0.9, 1.0], acc 1/2, conf 0.975 -> ECE = MCE = 0.475. A separate {1.0} bin (the
    # torchmetrics rule kdedge used to copy) gives MCE 0.95 instead.
    probs = torch.tensor([[0.95, 0.05], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    assert ece(probs, labels) == pytest.approx(0.475, abs=1e-12)
    assert mce(probs, labels) == pytest.approx(0.475, abs=1e-12)
    bins = calibration_bins(probs, labels)
    assert bins.counts == [0] * 9 + [2] and bins.accuracy[-1] == 0.5
    assert bins.confidence[-1] == pytest.approx(0.975, abs=1e-12)
    assert_textbook(probs, labels)


def test_float32_saturated_softmax_lands_in_the_last_bin() -> None:
    # float32 softmax saturates to exactly 1.0 for margins above ~17
    logits = torch.tensor([[40.0, 0.0, 0.0]] * 6 + [[2.0, 0.0, 0.0]] * 4 + [[1.0, 1.5, 0.0]] * 3
                          + [[3.5, 0.0, 0.0]] * 5)
    labels = torch.tensor([0, 0, 0, 0, 1, 2] + [0, 0, 0, 1] + [1, 0, 1] + [0, 0, 0, 0, 0])
    probs = torch.softmax(logits, dim=1)
    assert int((probs.max(1).values == 1.0).sum()) == 6
    bins = calibration_bins(probs, labels)
    assert bins.counts[-1] == 11 and sum(bins.counts) == 18
    # by hand: the last bin holds 6 saturated (4 right) + 5 at softmax(3.5, 0, 0) (all right)
    c35 = float(torch.softmax(torch.tensor([3.5, 0.0, 0.0], dtype=torch.float32), 0)[0].double())
    assert bins.accuracy[-1] == pytest.approx(9 / 11, abs=1e-15)
    assert bins.confidence[-1] == pytest.approx((6 + 5 * c35) / 11, abs=1e-15)
    assert_textbook(probs, labels)


# ---- (b) random logits: several sizes, class counts, seeds, bin counts, saturated ones included -------------
@pytest.mark.parametrize(
    "n,c,seed,scale",
    [(1, 2, 0, 1.0), (7, 3, 1, 2.0), (100, 10, 2, 3.0), (1000, 10, 3, 5.0), (2000, 2, 4, 1.0), (2000, 100, 5, 4.0),
     (500, 5, 11, 12.0), (300, 3, 12, 40.0)],
)
@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_mce_match_the_textbook_and_netcal_random(n: int, c: int, seed: int, scale: float, n_bins: int) -> None:
    logits, labels = random_case(n, c, seed, scale)
    for dtype in (torch.float32, torch.float64):
        assert_textbook(torch.softmax(logits.to(dtype), dim=1), labels, n_bins)


# torchmetrics accumulates bin sums in float32 (ours are float64) and bins float32-rounded confidences: its
# rounding is ~1e-7 here but passes 1e-6 near N = 1e5, so N stays small; scales stay low enough that no
# float32 confidence saturates to 1.0 (its extra bin, torchmetrics#3510).
@pytest.mark.parametrize("n,c,seed,scale", [(7, 3, 1, 2.0), (100, 10, 2, 3.0), (1000, 10, 3, 5.0), (2000, 2, 4, 1.0)])
@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_mce_match_torchmetrics_when_unsaturated(n: int, c: int, seed: int, scale: float, n_bins: int) -> None:
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
def test_ece_mce_real_digits(digits_logits, n_bins: int) -> None:
    logits, labels = digits_logits
    assert 0.85 < accuracy(logits, labels) < 1.0  # a real, imperfect classifier
    probs = torch.softmax(logits, dim=1)
    assert_textbook(probs, labels, n_bins)
    assert ece(probs, labels, n_bins) == pytest.approx(tm_ece(probs, labels, n_bins), abs=1e-6)
    assert mce(probs, labels, n_bins) == pytest.approx(tm_mce(probs, labels, n_bins), abs=1e-6)
    # the report softmaxes in float64
    report = classification_report(logits, labels, n_bins)
    want = textbook(torch.softmax(logits.double(), dim=1), labels, n_bins)
    assert report["ece"] == pytest.approx(want["ece"], abs=1e-12)
    assert report["mce"] == pytest.approx(want["mce"], abs=1e-12)


# ---- (c) edge cases ---------------------------------------------------------------------------------------
def rows_with_confidence(conf: torch.Tensor, c: int) -> torch.Tensor:
    """Probability rows whose max (class 0) is exactly `conf`; the rest spread evenly."""
    rest = ((1 - conf.double()) / (c - 1)).to(conf.dtype)
    probs = rest.unsqueeze(1).repeat(1, c)
    probs[:, 0] = conf
    assert bool((probs.max(1).values == conf).all()) and bool((probs.argmax(1) == 0).all())
    return probs


@pytest.mark.parametrize("n_bins", [3, 7, 10, 15])
def test_confidences_exactly_on_edges_close_their_bin(n_bins: int) -> None:
    # right-closed bins ((m-1)/M, m/M]: a confidence equal to the edge k/M (float64) belongs to bin k (1-based),
    # 0-based index k-1; 1.0 = M/M to the last bin
    c = 2 * n_bins + 2  # enough classes that 1/c is below the first inner edge we use
    ks = [k for k in range(1, n_bins + 1) if k / n_bins > 1.0 / c]
    conf = torch.tensor([k / n_bins for k in ks], dtype=torch.float64).repeat_interleave(3)
    labels = torch.tensor([0, 1, 0] * len(ks))  # 2/3 correct in every bin
    probs = rows_with_confidence(conf, c)
    bins = calibration_bins(probs, labels, n_bins)
    for k in ks:
        assert bins.counts[k - 1] == 3, (k, bins.counts)
    assert_textbook(probs, labels, n_bins, with_netcal=False)  # netcal bins inner edges left-closed


def test_confidences_are_binned_in_float64() -> None:
    # 0.7 - 1e-9 lies in (0.6, 0.7]; rounded to float32 it would be 0.699999988 = float32(0.7), the edge that
    # float32 binning (torchmetrics, kdedge before) puts into [0.7, 0.8). 0.3 + 1e-9 lies in (0.3, 0.4].
    conf = torch.tensor([0.7 - 1e-9, 0.3 + 1e-9], dtype=torch.float64)
    probs = rows_with_confidence(conf, 4)
    labels = torch.tensor([0, 1])
    bins = calibration_bins(probs, labels)
    assert bins.counts == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert bins.confidence[6] == 0.7 - 1e-9  # the float64 value, not its float32 rounding
    assert_textbook(probs, labels)


def test_confidence_zero_goes_to_first_bin() -> None:
    # an all-zero row is not a distribution, but it pins down the rule: B_1 = [0, 1/M]
    probs = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.8, 0.2]])
    labels = torch.tensor([0, 1, 0])
    bins = calibration_bins(probs, labels)
    assert bins.counts[0] == 2 and bins.accuracy[0] == 0.5 and bins.confidence[0] == 0.0
    assert_textbook(probs, labels)


def test_all_in_one_bin() -> None:
    g = torch.Generator().manual_seed(7)
    conf = 0.4 + 0.099 * torch.rand(50, generator=g)  # all in (0.4, 0.5)
    labels = torch.randint(0, 2, (50,), generator=g) * 3  # class 0 or 3 (of 5)
    probs = rows_with_confidence(conf, 5)
    bins = calibration_bins(probs, labels)
    assert bins.counts == [0, 0, 0, 0, 50, 0, 0, 0, 0, 0]
    acc = float((labels == 0).double().mean())
    assert ece(probs, labels) == pytest.approx(abs(acc - float(conf.double().mean())), abs=1e-12)
    assert ece(probs, labels) == pytest.approx(mce(probs, labels), abs=1e-12)  # one bin: ECE = MCE
    assert_textbook(probs, labels)
    assert ece(probs, labels) == pytest.approx(tm_ece(probs, labels), abs=1e-6)


def test_perfect_one_hot_predictions_have_zero_error() -> None:
    # every confidence is exactly 1.0 and right: the last bin, with no gap
    probs = torch.eye(4)[[0, 1, 2, 3, 1]]
    labels = torch.tensor([0, 1, 2, 3, 1])
    assert ece(probs, labels) == 0.0 and mce(probs, labels) == 0.0
    assert calibration_bins(probs, labels).counts[-1] == 5


# ---- hand-computed tiny case ------------------------------------------------------------------------------
def test_ece_by_hand() -> None:
    # 5 samples, 4 classes, 10 bins; class 0 holds the confidence, label 0 = correct.
    #   bin (0.9, 1.0]: conf 0.91 (correct), 0.95 (wrong) -> acc 1/2, conf 0.93,  gap 0.43,  weight 2/5
    #   bin (0.6, 0.7]: conf 0.65 (correct)              -> acc 1,   conf 0.65,  gap 0.35,  weight 1/5
    #   bin (0.3, 0.4]: conf 0.35 (wrong), 0.38 (correct) -> acc 1/2, conf 0.365, gap 0.135, weight 2/5
    # ECE = 0.4*0.43 + 0.2*0.35 + 0.4*0.135 = 0.172 + 0.070 + 0.054 = 0.296;  MCE = 0.43
    conf = torch.tensor([0.91, 0.95, 0.65, 0.35, 0.38], dtype=torch.float64)
    labels = torch.tensor([0, 2, 0, 1, 0])
    probs = rows_with_confidence(conf, 4)
    assert ece(probs, labels) == pytest.approx(0.296, abs=1e-12)
    assert mce(probs, labels) == pytest.approx(0.43, abs=1e-12)
    bins = calibration_bins(probs, labels)
    assert bins.edges == [k / 10 for k in range(11)]
    assert bins.counts == [0, 0, 0, 2, 0, 0, 1, 0, 0, 2]
    assert bins.accuracy == pytest.approx([0, 0, 0, 0.5, 0, 0, 1.0, 0, 0, 0.5])
    assert bins.confidence == pytest.approx([0, 0, 0, 0.365, 0, 0, 0.65, 0, 0, 0.93], abs=1e-12)


# ---- CalibrationBins ---------------------------------------------------------------------------------------
def test_bins_dict_round_trip_keeps_exact_ece() -> None:
    logits, labels = random_case(500, 5, 11, scale=12.0)  # many saturated confidences
    probs = torch.softmax(logits, dim=1)
    assert bool((probs.max(1).values == 1.0).any())
    bins = calibration_bins(probs, labels)
    d = bins.to_dict()
    assert set(d) >= {"edges", "counts", "accuracy", "confidence", "n", "ece", "mce"}
    assert d["n"] == 500 and d["ece"] == pytest.approx(textbook(probs, labels)["ece"], abs=1e-12)
    again = CalibrationBins.from_dict(d)
    assert again == bins and again.ece == bins.ece
    # reports written before the textbook rule carry saturated_* keys: still readable
    assert CalibrationBins.from_dict({**d, "saturated_count": 0, "saturated_accuracy": 0.0}) == bins


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
    assert r["ece"] == pytest.approx(textbook(torch.softmax(logits.double(), 1), labels)["ece"], abs=1e-12)
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
