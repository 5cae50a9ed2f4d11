"""Pieces shared by the edge students (MobileNet, ShuffleNet, EfficientNet-Lite, ImageNet ResNets, MobileOne).

Stem choice (option ``stem`` of every edge builder):

* ``"imagenet"``: the published stem (stride-2 first conv, plus the 3x3 max pool of ResNet/ShuffleNet);
  parameter counts and MACs at 224 px equal the published ones only with this stem.
* ``"small"``: for 28-64 px images (MNIST, CIFAR): the first conv has stride 1 and the max pool is
  dropped, as in the CIFAR variants of these nets, so a 32 px image is not 8 px after the stem.
* ``"auto"`` (default): ``"small"`` when ``image_size < 96`` (SMALL_INPUT_BELOW), else ``"imagenet"``.
"""

from __future__ import annotations

from torch import nn

from kdedge.models.base import ModelConfigError

SMALL_INPUT_BELOW = 96
STEMS = ("auto", "small", "imagenet")


def small_stem(stem: str, image_size: int) -> bool:
    """Whether to build the small-input stem; raises ModelConfigError for an unknown choice."""
    if stem not in STEMS:
        raise ModelConfigError("stem", f"must be one of {list(STEMS)}, got {stem!r}")
    return stem == "small" or (stem == "auto" and image_size < SMALL_INPUT_BELOW)


def check_width_mult(field: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 4.0:
        raise ModelConfigError(field, f"must be a number in (0, 4], got {value!r}")
    return float(value)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below `value`
    (the rule of the TF MobileNet reference that torchvision and timm follow)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, *, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU, bn_eps: float = 1e-5) -> nn.Sequential:
    """Conv (same padding, no bias) -> BN -> optional activation (in place: it acts on BN's fresh output)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=bn_eps),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def head_conv(cin: int, cout: int, act: type[nn.Module], bn_eps: float = 1e-5) -> list[tuple[str, nn.Module]]:
    """The 1x1 conv before pooling, as named ``head`` children (``head.act`` becomes a feature path)."""
    return [("conv", nn.Conv2d(cin, cout, 1, bias=False)), ("norm", nn.BatchNorm2d(cout, eps=bn_eps)),
            ("act", act(inplace=True))]


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and EfficientNet-Lite block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear
    projection, with a residual when the shape is kept. The expand conv is left out when ``hidden == cin``."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, *,
                 act: type[nn.Module] = nn.ReLU6, se: nn.Module | None = None, bn_eps: float = 1e-5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(conv_bn(cin, hidden, 1, act=act, bn_eps=bn_eps))
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act, bn_eps=bn_eps))
        if se is not None:
            layers.append(se)
        layers.append(conv_bn(hidden, cout, 1, act=None, bn_eps=bn_eps))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


def pooled_stem(cin: int, cout: int, kernel: int, *, stem: str, image_size: int) -> nn.Sequential:
    """The stem of ResNet and ShuffleNet: a stride-2 conv then a 3x3/2 max pool (ImageNet), or one stride-1
    3x3 conv for small inputs."""
    if small_stem(stem, image_size):
        return conv_bn(cin, cout, 3, 1)
    layers = conv_bn(cin, cout, kernel, 2)
    layers.append(nn.MaxPool2d(3, 2, 1))
    return layers
