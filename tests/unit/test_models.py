"""Every registered model, generated from the registry: a new model is covered with no extra work."""

import inspect

import pytest
import torch
from torch import nn

from kdedge.models import MODELS, build_model, model_options

NAMES = MODELS.names()
NUM_CLASSES = 7  # not 10, so a shape bug cannot hide behind a matching default
OPTION_TYPES = (int, float, bool, str, list[int])  # str: a choice, e.g. the edge nets' stem


def _build(name: str, in_channels: int = 3, image_size: int = 32, **kw) -> nn.Module:
    return build_model(name, in_channels=in_channels, num_classes=NUM_CLASSES, image_size=image_size, **kw)


def _input(in_channels: int, size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, in_channels, size, size, generator=torch.Generator().manual_seed(0))


def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Give BN real running stats: untrained deep ResNets in eval mode blow up (1e9 logits)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one batch sets the stats exactly
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def test_registry_lists_all_families() -> None:
    for name in ("mlp", "cnn", "vgg", "vgg16", "resnet", "resnet20", "resnet8x4", "wrn", "wrn_40_2"):
        assert name in MODELS


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_a_recipe_schema(name: str) -> None:
    params = inspect.signature(MODELS.get(name)).parameters
    for fixed in ("in_channels", "num_classes", "image_size"):
        assert params[fixed].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[fixed].default is inspect.Parameter.empty
    for key, p in model_options(name).items():
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, key
        assert p.default is not inspect.Parameter.empty, key
        assert p.annotation in OPTION_TYPES, (key, p.annotation)
    assert "dropout" in params


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_channels_and_sizes(name: str) -> None:
    for in_channels in (1, 3):
        for size in (8, 28, 32):
            model = _build(name, in_channels, size).eval()
            with torch.inference_mode():
                out = model(_input(in_channels, size))
            assert out.shape == (2, NUM_CLASSES), (in_channels, size)
            assert torch.isfinite(out).all(), (in_channels, size)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = _build(name, 3, 8).train()
    out = model(_input(3, 8))
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", NAMES)
def test_builds_on_meta_device(name: str) -> None:
    with torch.device("meta"):
        model = _build(name)
        out = model(torch.empty(2, 3, 32, 32))
    assert all(p.is_meta for p in model.parameters())
    assert out.shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", NAMES)
def test_eval_deterministic_and_channels_last(name: str) -> None:
    # float64: layout bugs show as O(1) errors, while float32 conv algorithms differ by ~1e-5
    # on a 110-layer net; in double the 1e-5 tolerance is strict and never flaky
    x = _input(3, 32).double()
    model = _build(name, 3, 32).double()
    _calibrate_bn(model, _input(3, 32, batch=4).double())
    with torch.inference_mode():
        ref = model(x)
        assert torch.equal(ref, model(x))
        cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(cl), ref, atol=1e-5, rtol=1e-5)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(cl), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_layout_classifier_dropout_and_feature_paths(name: str) -> None:
    model = _build(name, 3, 8, dropout=0.25)
    classifier = model.get_submodule(model.classifier_path)
    assert isinstance(classifier, nn.Linear) and classifier.out_features == NUM_CLASSES
    # the dropout right before the classifier exists and carries the option (MC dropout finds it)
    modules = [m for m in model.modules() if not isinstance(m, (nn.Sequential, type(model)))]
    before = modules[modules.index(classifier) - 1]
    assert isinstance(before, nn.Dropout) and before.p == 0.25

    # hooked features must survive the rest of the forward (no in-place op overwrites them),
    # so a feature-KD loss on them can backpropagate
    seen: dict[str, torch.Tensor] = {}
    paths = model.feature_paths()
    for path in paths:
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, path=path: seen.__setitem__(path, out)
        )
    out = model.train()(_input(3, 8))
    assert set(seen) == set(paths)
    for path, feat in seen.items():
        assert feat.shape[0] == 2 and feat.dim() in (2, 4), (path, feat.shape)
    (out.sum() + sum(f.square().mean() for f in seen.values())).backward()
