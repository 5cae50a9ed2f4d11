"""MC dropout: the batched fast path equals the naive loop with identical masks; metrics and MUPE."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_calibration_error

from kdedge.metrics import calibration_bins
from kdedge.models import build_model
from kdedge.plots import reliability_diagram
from kdedge.uncertainty.compare import compare_mc_dropout
from kdedge.uncertainty import (
    NOT_APPLICABLE,
    McDropoutNotApplicable,
    UnsplittableModel,
    mc_dropout_predict,
    mc_metrics,
    mupe,
    mupe_parts,
    split_at_first_dropout,
    summarise_passes,
)

FIELDS = ("mean_probs", "confidence", "entropy", "variance", "predicted_variance", "mutual_information")
MODELS = {
    "cnn": ("cnn", {"channels": [8, 16], "dropout": 0.3}),
    "mlp": ("mlp", {"widths": [32, 16], "dropout": 0.3}),  # dropout after every hidden layer
    "resnet8": ("resnet8", {"dropout": 0.3}),
    "wrn_block": ("wrn_16_1", {"dropout": 0.2, "block_dropout": 0.3}),  # first dropout inside a block
    "vgg_hidden": ("vgg", {"depth": 8, "width": 4, "hidden": [16, 16], "dropout": 0.5}),
}


def make(key: str, **override) -> nn.Module:
    name, opts = MODELS[key]
    torch.manual_seed(0)
    return build_model(name, in_channels=1, num_classes=10, image_size=8, **{**opts, **override})


def images(n: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def assert_same(a, b, atol: float = 1e-5) -> None:
    for f in FIELDS:
        diff = (getattr(a, f).double() - getattr(b, f).double()).abs().max().item()
        assert diff <= atol, f"{f}: max abs diff {diff}"


@pytest.mark.parametrize("key", list(MODELS))
def test_fast_equals_naive_with_identical_masks(key: str) -> None:
    model, x = make(key), images()
    fast = mc_dropout_predict(model, x, samples=12, seed=3, batch_size=8)
    naive = mc_dropout_predict(model, x, samples=12, seed=3, batch_size=8, fast=False)
    assert (fast.method, naive.method) == ("fast", "naive")
    assert fast.split_at is not None and naive.split_at is None
    assert_same(fast, naive)
    assert float(fast.variance.mean()) > 0  # dropout really was on


def test_split_points_and_chunking() -> None:
    for key, at in (("cnn", "head.dropout"), ("mlp", "layers.0.2"), ("wrn_block", "stages.0.0"),
                    ("vgg_hidden", "head.fc.2")):
        assert mc_dropout_predict(make(key), images(4), samples=2).split_at == at
    model, x = make("cnn"), images()
    whole = mc_dropout_predict(model, x, samples=10, batch_size=8)
    tiny_chunks = mc_dropout_predict(model, x, samples=10, batch_size=8, chunk_elements=100)  # 1 pass/chunk
    assert_same(whole, tiny_chunks, atol=1e-6)
    head, tail = split_at_first_dropout(model)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(tail(head(x)), model(x))


def test_loader_input_equals_tensor_input() -> None:
    model, x = make("mlp"), images()
    labels = torch.arange(20) % 10
    loader = [(x[i:i + 8], labels[i:i + 8]) for i in range(0, 20, 8)]
    assert_same(mc_dropout_predict(model, loader, samples=5), mc_dropout_predict(model, x, samples=5, batch_size=8),
                atol=0.0)


def test_seeded_reproducible_and_seeds_differ() -> None:
    model, x = make("resnet8"), images()
    a = mc_dropout_predict(model, x, samples=8, seed=7)
    b = mc_dropout_predict(model, x, samples=8, seed=7)
    c = mc_dropout_predict(model, x, samples=8, seed=8)
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert (a.mean_probs - c.mean_probs).abs().max() > 1e-4
    assert (a.seed, c.seed, a.samples) == (7, 8, 8)


def test_batch_norm_stays_in_eval_and_model_is_restored() -> None:
    model = make("cnn")
    model.train()  # as if called mid-training: MC must still use (and not touch) the running stats
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mc_dropout_predict(model, images() * 3 + 1, samples=6)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. num_batches_tracked
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())  # mask hooks removed


def test_no_dropout_is_not_applicable() -> None:
    for model in (make("cnn", dropout=0.0), make("mlp", dropout=0.0)):  # dropout module present, p = 0
        assert split_at_first_dropout(model) is None
        with pytest.raises(McDropoutNotApplicable, match=NOT_APPLICABLE):
            mc_dropout_predict(model, images(4), samples=3)


def test_unknown_layout_falls_back_to_naive() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.drop, self.fc2 = nn.Linear(64, 16), nn.Dropout(0.4), nn.Linear(16, 10)

        def forward(self, x):
            return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))

    torch.manual_seed(0)
    model = Odd()
    with pytest.raises(UnsplittableModel):
        split_at_first_dropout(model)
    res = mc_dropout_predict(model, images(6), samples=5)
    assert res.method == "naive" and "not possible" in res.note
    assert float(res.variance.mean()) > 0


def test_p_to_zero_equals_deterministic_softmax() -> None:
    model, x = make("cnn", dropout=1e-9), images()
    res = mc_dropout_predict(model, x, samples=10)
    model.eval()
    with torch.no_grad():
        det = torch.softmax(model(x), 1)
    torch.testing.assert_close(res.mean_probs, det, atol=1e-6, rtol=0)
    assert float(res.variance.max()) < 1e-10


def test_rows_sum_to_one_and_definitions_by_hand() -> None:
    res = mc_dropout_predict(make("vgg_hidden"), images(), samples=10)
    torch.testing.assert_close(res.mean_probs.sum(1), torch.ones(20), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.confidence, res.mean_probs.double().max(1).values, atol=1e-6, rtol=0)

    probs = torch.tensor([[[0.6, 0.3, 0.1]], [[0.4, 0.3, 0.3]]])  # 2 passes, 1 sample, 3 classes
    s = summarise_passes(probs)
    h = lambda p: -sum(v * math.log(v) for v in p)  # noqa: E731
    assert s["confidence"].item() == pytest.approx(0.5)
    assert s["entropy"].item() == pytest.approx(h([0.5, 0.3, 0.2]))
    assert s["variance"].item() == pytest.approx((0.01 + 0.0 + 0.01) / 3)  # per-class, population, mean
    assert s["predicted_variance"].item() == pytest.approx(0.01)  # class 0
    mi = h([0.5, 0.3, 0.2]) - (h([0.6, 0.3, 0.1]) + h([0.4, 0.3, 0.3])) / 2
    assert s["mutual_information"].item() == pytest.approx(mi)
    expected = [(math.log(0.6) + math.log(0.4)) / 2, math.log(0.3), (math.log(0.1) + math.log(0.3)) / 2]
    assert s["mean_log_probs"][0].tolist() == pytest.approx(expected, rel=1e-6)


def test_mc_metrics_match_torchmetrics() -> None:
    model = make("mlp")
    with torch.no_grad():
        model.classifier.weight.mul_(8)  # spread the confidences over many bins
    x = images(200, seed=5)
    labels = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(6))
    res = mc_dropout_predict(model, x, samples=10, batch_size=64)
    # torchmetrics is an oracle only without saturated confidences (it bins conf == 1.0 apart, torchmetrics#3510)
    assert bool((res.mean_probs.max(1).values < 1.0).all())
    m = mc_metrics(res, labels)
    tm = dict(num_classes=10, n_bins=10)
    assert m["ece"] == pytest.approx(float(multiclass_calibration_error(res.mean_probs, labels, norm="l1", **tm)),
                                     abs=1e-6)
    assert m["mce"] == pytest.approx(float(multiclass_calibration_error(res.mean_probs, labels, norm="max", **tm)),
                                     abs=1e-6)
    assert m["accuracy"] == pytest.approx(float((res.mean_probs.argmax(1) == labels).double().mean()))
    nll = -res.mean_probs.double()[torch.arange(200), labels].log().mean()
    assert m["nll"] == pytest.approx(float(nll))
    assert m["mean_variance"] == pytest.approx(float(res.variance.mean()))
    assert (m["samples"], m["method"]) == (10, "fast")


def test_mupe_by_hand() -> None:
    teacher, student = [0.9, 0.8, 0.6, 0.5], [0.7, 0.8, 0.9, 0.4]
    assert mupe(teacher, student) == pytest.approx((0.04 + 0.0 + 0.09 + 0.01) / 4)
    assert mupe(torch.tensor(teacher), torch.tensor(teacher)) == 0.0
    with pytest.raises(ValueError, match="equal length"):
        mupe([0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="empty"):
        mupe([], [])


def test_mupe_parts_by_hand() -> None:
    # d = student − teacher = [-0.2, 0, 0.3, -0.1]: MUPE 0.035, bias 0, variance 0.035; classes differ on
    # samples 0 and 2, which carry (0.04 + 0.09) / 0.14 of the squared error
    teacher = torch.tensor([0.9, 0.8, 0.6, 0.5], dtype=torch.float64)
    student = torch.tensor([0.7, 0.8, 0.9, 0.4], dtype=torch.float64)
    parts = mupe_parts(teacher, student, torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2, 0, 4]))
    assert parts["value"] == pytest.approx(0.035) and parts["bias"] == pytest.approx(0.0, abs=1e-12)
    assert parts["bias_squared"] + parts["variance"] == pytest.approx(parts["value"])
    assert parts["disagreement"] == 0.5 and parts["from_disagreement"] == pytest.approx(0.13 / 0.14)
    # a uniformly underconfident student: all of MUPE is bias
    shifted = mupe_parts(teacher, teacher - 0.1, torch.zeros(4), torch.zeros(4))
    assert shifted["bias"] == pytest.approx(-0.1) and shifted["variance"] == pytest.approx(0.0, abs=1e-12)
    assert shifted["bias_squared"] == pytest.approx(shifted["value"]) and shifted["from_disagreement"] == 0.0
    assert mupe_parts(teacher, teacher, torch.zeros(4), torch.ones(4))["from_disagreement"] == 0.0


def test_streams_draw_independent_masks() -> None:
    model, x = make("mlp"), images(30, seed=4)
    default = mc_dropout_predict(model, x, samples=6, seed=2)
    assert default.stream == ""
    a = mc_dropout_predict(model, x, samples=6, seed=2, stream="teacher")
    b = mc_dropout_predict(model, x, samples=6, seed=2, stream="student")
    assert not torch.equal(a.mean_probs, b.mean_probs) and not torch.equal(a.mean_probs, default.mean_probs)
    assert torch.equal(a.mean_probs, mc_dropout_predict(model, x, samples=6, seed=2, stream="teacher").mean_probs)
    with pytest.raises(ValueError, match="stream"):
        mc_dropout_predict(model, x, samples=2, stream=3)  # type: ignore[arg-type]


def _torch_dropout_confidence(model: nn.Module, x: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """The MC confidence with torch's own dropout (train mode; the MLP has no batch norm), one seed."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        mean = torch.stack([torch.softmax(model(x).double(), 1) for _ in range(samples)]).mean(0)
    model.eval()
    return mean.max(1).values


def test_mupe_masks_independent_by_default_and_shared_on_request() -> None:
    # a same-architecture pair with identical weights: the two models are one function, so MUPE measures
    # only how the two MC estimates differ. Seed 000 compares independent MC estimates: MUPE must then
    # match two independent torch-dropout runs of that model, not the ~0 of identical masks.
    teacher, student = make("mlp"), make("mlp")
    with torch.no_grad():
        for m in (teacher, student):
            m.classifier.weight.mul_(8)  # confidences away from uniform, so they vary across masks
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), student.parameters()))
    x, labels, n = images(400, seed=21), torch.arange(400) % 10, 20
    models = {"teacher": teacher, "student": student}
    independent = compare_mc_dropout(models, x, labels, samples=n, seed=0, device=torch.device("cpu"))
    shared = compare_mc_dropout(models, x, labels, samples=n, seed=0, device=torch.device("cpu"), masks="shared")
    assert (independent["masks"], shared["masks"]) == ("independent", "shared")
    assert "common random numbers" in shared["masks_note"] and "seed 000" in independent["masks_note"]
    assert shared["mupe"]["student"]["value"] == 0.0  # identical masks, identical outputs

    # oracle: MUPE of independent draws with torch's nn.Dropout, averaged over 5 seed pairs
    ref = sum(mupe(_torch_dropout_confidence(teacher, x, n, 2 * k), _torch_dropout_confidence(student, x, n, 2 * k + 1))
              for k in range(5)) / 5
    got = independent["mupe"]["student"]["value"]
    assert ref > 1e-5 and 0.6 < got / ref < 1.6, (got, ref)
    # and the delta method: E (c1 - c2)^2 ~ 2 Var(mean of n passes) = 2 s^2 / n, s^2 the per-pass variance
    mc = mc_dropout_predict(teacher, x, samples=n, seed=0, stream="teacher")
    delta = float((2 * mc.predicted_variance.double() * n / (n - 1) / n).mean())
    assert 0.5 < got / delta < 1.5, (got, delta)
    with pytest.raises(ValueError, match="masks must be one of"):
        compare_mc_dropout(models, x, labels, samples=2, seed=0, device=torch.device("cpu"), masks="same")


def test_reliability_overlay_of_mc_results(tmp_path: Path) -> None:
    x, labels = images(100, seed=9), torch.arange(100) % 10
    curves = {key: calibration_bins(mc_dropout_predict(make(key), x, samples=5).mean_probs, labels)
              for key in ("cnn", "mlp")}
    out = tmp_path / "mc_reliability.png"
    reliability_diagram(curves, out, title="MC dropout: teacher vs student")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
