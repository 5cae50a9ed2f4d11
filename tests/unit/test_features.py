"""FeatureTap on unmodified kdedge models: captured outputs equal a manual forward through the
same submodules, hooks leave no trace, and bad paths are user errors listing the valid ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.features import FeatureTap, validate_paths
from kdedge.losses import hint_loss, make_hint_adapter
from kdedge.models import MODELS, build_model


def _resnet8() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet8", in_channels=3, num_classes=10, image_size=8).eval()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", in_channels=1, num_classes=10, image_size=8, widths=[16, 12]).eval()


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_resnet8_features_equal_a_manual_forward() -> None:
    model = _resnet8()
    paths = model.feature_paths()
    assert paths == ["stem", "stages.0", "stages.1", "stages.2", "head.flatten"]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        stem = model.stem(x)
        s0 = model.stages[0](stem)
        s1 = model.stages[1](s0)
        s2 = model.stages[2](s1)
        flat = model.head.flatten(model.head.pool(s2))
        logits = model.head.classifier(model.head.dropout(flat))
        with FeatureTap(model, paths) as tap:
            out = model(x)
            got = dict(tap.features)
    torch.testing.assert_close(out, logits, rtol=0, atol=0)
    for path, want in zip(paths, (stem, s0, s1, s2, flat)):
        torch.testing.assert_close(got[path], want, rtol=0, atol=0)
    assert _no_hooks(model)


def test_mlp_features_equal_a_manual_forward() -> None:
    model = _mlp()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        h0 = model.layers[0](torch.flatten(x, 1))
        h1 = model.layers[1](h0)
    with FeatureTap(model, ["layers.1", "layers.0"]) as tap:
        model(x)
        assert set(tap.features) == {"layers.0", "layers.1"}  # in the order the forward ran them
        torch.testing.assert_close(tap.features["layers.0"], h0, rtol=0, atol=0)
        torch.testing.assert_close(tap.features["layers.1"], h1, rtol=0, atol=0)
    assert _no_hooks(model)


def test_student_features_keep_their_graph_and_feed_the_hint_loss() -> None:
    student, teacher = _mlp().train(), _resnet8()
    x_img = torch.randn(2, 3, 8, 8)
    with torch.inference_mode(), FeatureTap(teacher, ["stages.1"]) as ttap:
        teacher(x_img)
    t_feat = ttap.features["stages.1"]  # still readable after the block
    with FeatureTap(student, ["layers.1"]) as stap:
        student(torch.randn(2, 1, 8, 8))
        s_feat = stap.features["layers.1"]
    assert s_feat.requires_grad and s_feat.grad_fn is not None
    # vector student vs map teacher: pool the teacher map to a vector first (an adapter can't mix kinds)
    t_vec = t_feat.mean(dim=(2, 3))
    adapter = make_hint_adapter(s_feat, t_vec)
    hint_loss(s_feat, t_vec, adapter).backward()
    assert all(p.grad is not None for p in student.layers[1].parameters())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("name", ["cnn", "resnet8", "vgg8", "wrn_16_1", "mlp"])
def test_every_feature_path_of_the_models_is_tappable_without_inplace_overwrites(name: str) -> None:
    if name not in MODELS:
        pytest.skip(f"{name} not registered")
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, num_classes=5, image_size=8).train()
    with FeatureTap(model, model.feature_paths()) as tap:
        model(torch.randn(2, 3, 8, 8))
        for path in model.feature_paths():
            assert isinstance(tap.features[path], torch.Tensor)  # raises if overwritten in place
    assert _no_hooks(model)


def test_a_feature_overwritten_in_place_raises_instead_of_lying() -> None:
    model = _resnet8()
    # bn1 is followed by ReLU(inplace=True): its captured output would silently be post-ReLU
    with FeatureTap(model, ["stages.0.0.bn1"]) as tap:
        model(torch.randn(2, 3, 8, 8))
        with pytest.raises(KdedgeError, match="in place"):
            tap.features["stages.0.0.bn1"]


def test_hooks_are_removed_on_exit_even_after_an_error() -> None:
    model = _resnet8()
    with pytest.raises(RuntimeError):
        with FeatureTap(model, ["stages.1"]):
            assert model.stages[1]._forward_hooks
            model(torch.randn(2, 5, 8, 8))  # wrong channel count
    assert _no_hooks(model)
    tap = FeatureTap(model, ["stem", "stem"])  # duplicates are one hook
    assert len(model.stem._forward_hooks) == 1
    tap.remove()
    tap.remove()  # idempotent
    assert _no_hooks(model)


def test_unknown_path_lists_the_valid_ones() -> None:
    model = _resnet8()
    valid = r"valid paths: stem, stages\.0, stages\.1, stages\.2, head\.flatten"
    with pytest.raises(KdedgeError, match=r"'stages\.3'.*" + valid):
        FeatureTap(model, ["stages.1", "stages.3"])
    assert _no_hooks(model)
    with pytest.raises(KdedgeError, match="valid paths"):
        validate_paths(model, [""])  # the model itself: use a logits loss instead

    # a model without feature_paths(): its named modules are listed
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(KdedgeError, match="valid paths: 0, 1"):
        validate_paths(plain, ["2"])
    assert not issubclass(KdedgeError, (KeyError, ValueError))


def test_validate_paths_on_a_meta_device_model() -> None:
    with torch.device("meta"):
        model = build_model("resnet8", in_channels=3, num_classes=10, image_size=32)
    assert next(model.parameters()).is_meta
    validate_paths(model, ["stages.1", "head.flatten", "stages.0.0.conv1"])  # any real submodule
    with pytest.raises(KdedgeError, match="head.flatten"):
        validate_paths(model, ["layer2"])
