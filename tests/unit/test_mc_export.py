"""MC dropout inside the exported ONNX model (kdedge/export/onnx_mc.py) against kdedge's torch MC dropout
(kdedge/uncertainty/mc_dropout.py), for a dropout CNN, a VGG with dropout in its classifier and a ResNet
with dropout before its classifier:

* statistically (same p, same N, independent masks): the MC-averaged probabilities, entropy and variance
  within their Monte-Carlo standard error (measured: R repeated ONNX calls), a two-sample KS test on the
  per-image confidences (scipy), MUPE of a teacher/student pair within its standard error;
* exactly: the debug form of the graph fed the very masks torch drew (recorded from torch.rand) equals
  mc_dropout_predict to 1e-5.

The models are untrained (random inputs), with their classifier weights scaled up so the softmax is not flat.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import pytest
import torch

from kdedge.export import onnx_mc
from kdedge.export.ort_session import open_session
from kdedge.models import build_model
from kdedge.uncertainty.mc_dropout import mc_dropout_predict
from kdedge.uncertainty.stats import mupe

pytest.importorskip("onnxruntime")
stats = pytest.importorskip("scipy.stats")

SAMPLES = 30
REPEATS = 20     # independent ONNX calls: their spread is the standard error of one N-sample estimate
IMAGES = 192
SHAPE = (3, 16, 16)
SPECS = {  # key -> (model, options, classifier scale): dropout where each family puts it, p != 0.5 where
    # the option allows; the scale spreads the untrained softmax (confidences ~0.2 to 1)
    "cnn": ("cnn", {"channels": [8, 16], "dropout": 0.3}, 6.0),
    "vgg": ("vgg", {"depth": 8, "width": 8, "hidden": [32, 32], "dropout": 0.5}, 40.0),
    "resnet": ("resnet8", {"dropout": 0.2}, 6.0),
}


def make_model(key: str) -> torch.nn.Module:
    torch.manual_seed(7)
    name, options, scale = SPECS[key]
    model = build_model(name, in_channels=SHAPE[0], num_classes=10, image_size=SHAPE[1], **options).eval()
    with torch.no_grad():
        model.head.classifier.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(IMAGES, *SHAPE, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """key -> (torch model, path of its MC ONNX, the torch MC model it was exported from)."""
    out = {}
    root = tmp_path_factory.mktemp("mc")
    for key in SPECS:
        model = make_model(key)
        path = root / f"{key}.mc.onnx"
        wrapper = onnx_mc.export_mc_onnx(model, SAMPLES, torch.zeros(2, *SHAPE), path)
        out[key] = (model, path, wrapper)
    return out


def onnx_runs(path: Path, x: np.ndarray, repeats: int) -> dict[str, np.ndarray]:
    """Each MC output of `repeats` independent calls, stacked [R, ...]."""
    session = open_session(path)
    runs = [session.run(list(onnx_mc.MC_OUTPUTS), {"images": x}) for _ in range(repeats)]
    return {name: np.stack([r[k] for r in runs]) for k, name in enumerate(onnx_mc.MC_OUTPUTS)}


def z_scores(torch_value: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """(torch - mean of the R ONNX estimates) / its standard error; the standard error of one estimate is the
    spread of the R runs (both sides: same p, same N). Entries whose mean is below 0.01 are left out: the
    MC mean of a rare class is far from normal at N = 30 (a few passes make it), so its z is meaningless."""
    se = runs.std(0, ddof=1)
    mask = (se > 1e-6) & (runs.mean(0) >= 0.01) if runs.ndim == 3 else se > 1e-9
    return ((torch_value - runs.mean(0)) / (se * np.sqrt(1 + 1 / runs.shape[0])))[mask]


@pytest.mark.parametrize("key", list(SPECS))
def test_graph_uses_only_tensorrt_ops_and_cuts_where_torch_does(exported, key):
    model, path, wrapper = exported[key]
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"RandomUniformLike", "Less", "Cast", "Tile"} <= ops
    assert not ops & {"Dropout", "Bernoulli", "RandomUniform", "RandomNormalLike"}
    assert [o.name for o in graph.output] == list(onnx_mc.MC_OUTPUTS)
    active = sum(1 for m in model.modules() if type(m) is torch.nn.Dropout and m.p > 0)
    assert sum(n.op_type == "RandomUniformLike" for n in graph.node) == len(wrapper.masks()) == active >= 1
    # the prefix (run once) ends where torch's fast path ends it
    result = mc_dropout_predict(model, torch.zeros(2, *SHAPE), samples=2)
    assert wrapper.split_at == result.split_at


@pytest.mark.parametrize("key", list(SPECS))
def test_mc_statistics_match_torch_within_their_standard_error(exported, images, key):
    model, path, _ = exported[key]
    result = mc_dropout_predict(model, images, samples=SAMPLES, seed=11)
    runs = onnx_runs(path, images.numpy(), REPEATS)
    for name, value in (("probs", result.mean_probs), ("entropy", result.entropy), ("variance", result.variance)):
        z = z_scores(value.double().numpy(), runs[name].astype(np.float64))
        assert len(z) >= IMAGES, name
        # ~N(0, 1) under the null (t with R - 1 degrees of freedom): ~94% within 2, ~99% within 3, centred;
        # a wrong p, scale, tiling or statistic moves them all (at 96 images, 45 seeds: worst 0.85 and 0.96)
        assert np.mean(np.abs(z) < 2) > 0.82, (name, np.mean(np.abs(z) < 2))
        assert np.mean(np.abs(z) < 3) > 0.93, (name, np.mean(np.abs(z) < 3))
        assert abs(z.mean()) < 0.5, (name, z.mean())  # images are independent: sd of the mean ~0.07


@pytest.mark.parametrize("key", list(SPECS))
def test_confidences_pass_a_two_sample_ks_test(exported, images, key):
    model, path, _ = exported[key]
    torch_conf = mc_dropout_predict(model, images, samples=SAMPLES, seed=5).confidence.numpy()
    onnx_conf = onnx_runs(path, images.numpy(), 1)["probs"][0].max(1)
    assert torch_conf.std() > 0.02  # not a degenerate (flat) distribution
    assert stats.ks_2samp(torch_conf, onnx_conf).pvalue > 0.01


def test_mupe_of_a_teacher_student_pair_matches_torch_within_its_standard_error(exported, images):
    (teacher, t_path, _), (student, s_path, _) = exported["vgg"], exported["cnn"]
    torch_value = mupe(mc_dropout_predict(teacher, images, samples=SAMPLES, stream="teacher").confidence,
                       mc_dropout_predict(student, images, samples=SAMPLES, stream="student").confidence)
    t_runs = onnx_runs(t_path, images.numpy(), REPEATS)["probs"].max(2)
    s_runs = onnx_runs(s_path, images.numpy(), REPEATS)["probs"].max(2)
    values = np.array([mupe(t, s) for t, s in zip(t_runs, s_runs)])  # independent masks, as torch's streams
    se = values.std(ddof=1) * np.sqrt(1 + 1 / REPEATS)
    assert torch_value > 0.01
    assert abs(torch_value - values.mean()) < 4 * se, (torch_value, values.mean(), se)


def recorded_masks(model: torch.nn.Module, x: torch.Tensor, samples: int) -> tuple:
    """mc_dropout_predict's result and the keep masks it drew, one [N*B, *features] array per dropout
    (forward order, pass-major rows), read from its torch.rand calls."""
    draws = []
    real = torch.rand

    def recording(*args, **kwargs):
        draws.append(real(*args, **kwargs))
        return draws[-1]

    with mock.patch("torch.rand", recording):
        result = mc_dropout_predict(model, x, samples=samples, seed=2, batch_size=len(x), chunk_elements=1 << 30)
    ps = [m.p for m in model.modules() if type(m) is torch.nn.Dropout and m.p > 0]
    assert len(draws) == samples * len(ps)  # one draw per pass and dropout, all in one tail call
    masks = [torch.cat(draws[i * samples:(i + 1) * samples]) >= p for i, p in enumerate(ps)]
    return result, masks


@pytest.mark.parametrize("key", list(SPECS))
def test_fed_the_masks_torch_drew_the_graph_equals_torch_mc_dropout(exported, images, key):
    model, path, _ = exported[key]
    x = images[:24]
    result, masks = recorded_masks(model, x, SAMPLES)
    session, names = onnx_mc.debug_session(path)
    # u = 0 keeps (0 < 1 - p), u = 1 drops: the graph's own Less -> Cast -> Mul applies torch's masks
    uniforms = [np.where(m.numpy(), 0.0, 1.0).astype(np.float32) for m in masks]
    probs, entropy, variance, _ = onnx_mc.session_fed(session, x.numpy(), names, uniforms)
    np.testing.assert_allclose(probs, result.mean_probs.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(entropy, result.entropy.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(variance, result.variance.numpy(), atol=1e-5, rtol=0)
    # and the fed masks matter: other masks give other outputs
    other = [1.0 - u for u in uniforms]
    assert np.abs(onnx_mc.session_fed(session, x.numpy(), names, other)[0] - probs).max() > 1e-3


@pytest.mark.parametrize("key", ["vgg"])
def test_fed_uniforms_graph_equals_its_torch_model(exported, images, key):
    """The Less(u, 1 - p) threshold and 1 / (1 - p) scale, checked with real uniforms against McMask."""
    _, path, wrapper = exported[key]
    x = images[:16]
    shapes = onnx_mc.mask_shapes(wrapper, x)
    uniforms = onnx_mc.uniforms_for(shapes, SAMPLES * len(x), np.random.default_rng(0))
    session, names = onnx_mc.debug_session(path)
    got = onnx_mc.session_fed(session, x.numpy(), names, uniforms)
    want = onnx_mc.torch_fed(wrapper, x, uniforms)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_dynamic_batch(exported, images):
    _, path, _ = exported["cnn"]
    session = open_session(path)
    for b in (1, 7):
        probs, entropy, variance, logits = session.run(None, {"images": images[:b].numpy()})
        assert probs.shape == logits.shape == (b, 10) and entropy.shape == variance.shape == (b,)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
