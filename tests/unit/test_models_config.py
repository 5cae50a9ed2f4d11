"""Independent oracles (published parameter counts) and the config-error contract."""

import pytest
import torch

from kdedge.errors import KdedgeError
from kdedge.models import MODELS, ModelConfigError, build_model


def _params(name: str, **kw) -> int:
    with torch.device("meta"):  # counting needs no real weights
        model = build_model(name, **{"in_channels": 3, "num_classes": 10, "image_size": 32, **kw})
    return sum(p.numel() for p in model.parameters())


# published sizes: He et al. 2016 (CIFAR ResNets), Zagoruyko & Komodakis 2016 (WRN),
# Tian et al. 2020 "Contrastive Representation Distillation" table (resnet8x4, resnet32x4)
PUBLISHED = {
    "resnet20": 0.27e6,
    "resnet56": 0.85e6,
    "resnet110": 1.7e6,
    "resnet8x4": 1.23e6,
    "resnet32x4": 7.43e6,
    "wrn_40_2": 2.2e6,
    "wrn_16_2": 0.70e6,
}


@pytest.mark.parametrize("name,expected", sorted(PUBLISHED.items()))
def test_parameter_counts_match_published(name: str, expected: float) -> None:
    assert abs(_params(name) - expected) / expected <= 0.02


def test_seed000_vgg16_teacher_has_the_papers_parameter_count() -> None:
    # seed 000: "VGG16-like ... 16 layers with 14,913,226 learnable parameters" on MNIST
    n = _params("vgg16", in_channels=1, image_size=28, hidden=[256, 256], batch_norm=False)
    assert n == 14_913_226


def test_generic_builders_match_named_variants() -> None:
    assert _params("resnet", depth=56) == _params("resnet56")
    assert _params("wrn", depth=40, widen_factor=2) == _params("wrn_40_2")
    assert _params("vgg", depth=11) == _params("vgg11")


@pytest.mark.parametrize(
    "name,kwargs,field",
    [
        ("resnet", {"depth": 21}, "depth"),
        ("resnet", {"depth": 2}, "depth"),
        ("wrn", {"depth": 17}, "depth"),
        ("vgg", {"depth": 12}, "depth"),
        ("resnet20", {"dropout": 1.5}, "dropout"),
        ("vgg16", {"dropout": 1.0}, "dropout"),
        ("wrn_16_2", {"block_dropout": -0.1}, "block_dropout"),
        ("mlp", {"widths": []}, "widths"),
        ("mlp", {"widths": [64, 0]}, "widths"),
        ("cnn", {"channels": []}, "channels"),
        ("resnet", {"width": 0}, "width"),
        ("resnet20", {"num_classes": 0}, "num_classes"),
        ("resnet20", {"depth": 20}, "depth"),  # not an option of a named variant
    ],
)
def test_bad_values_raise_model_config_error(name: str, kwargs: dict, field: str) -> None:
    args = {"in_channels": 3, "num_classes": 10, "image_size": 32, **kwargs}
    # the recipe loader builds on the meta device; errors must surface there too
    with torch.device("meta"), pytest.raises(ModelConfigError) as info:
        build_model(name, **args)
    assert info.value.field == field
    assert isinstance(info.value, ValueError) and isinstance(info.value, KdedgeError)
    assert field in str(info.value)


def test_error_messages_say_what_is_allowed() -> None:
    with pytest.raises(ModelConfigError, match=r"6n\+2"):
        build_model("resnet", in_channels=3, num_classes=10, image_size=32, depth=21)
    with pytest.raises(ModelConfigError, match=r"6n\+4"):
        build_model("wrn", in_channels=3, num_classes=10, image_size=32, depth=17)
    with pytest.raises(ModelConfigError, match=r"\[0, 1\)"):
        build_model("mlp", in_channels=3, num_classes=10, image_size=32, dropout=1.5)


def test_unknown_model_lists_available_names() -> None:
    with pytest.raises(KdedgeError) as info:
        build_model("resnet21", in_channels=3, num_classes=10, image_size=32)
    for name in MODELS.names():
        assert name in info.value.message


def test_vgg_never_pools_below_one_pixel() -> None:
    pools = lambda size: sum(  # noqa: E731
        isinstance(m, torch.nn.MaxPool2d)
        for m in build_model("vgg8", in_channels=1, num_classes=10, image_size=size).modules()
    )
    assert (pools(8), pools(28), pools(32)) == (3, 4, 5)
