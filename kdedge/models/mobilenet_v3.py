"""MobileNetV3-Small and -Large (Howard et al. 2019, "Searching for MobileNetV3").

Block tables (kernel, expanded, out, squeeze-excite, activation, stride) as in torchvision's
``mobilenet_v3_small`` / ``mobilenet_v3_large`` (the paper's tables 1 and 2): a 3x3 stride-2 stem of 16
channels with hard-swish, inverted residual blocks whose squeeze-excite squeezes to
``make_divisible(expanded / 4)`` channels and gates with a hard-sigmoid, a 1x1 conv to 6x the last block
width (576 / 960), global pooling, Linear to 1024 / 1280 + hard-swish, dropout 0.2 and the classifier.
BN eps 1e-3 as the reference. At 224 px, 3 channels, 1000 classes: 2,542,856 (small) and 5,483,032
(large) parameters, ~0.057 / ~0.217 GMACs.

``stem``: "auto" (default; the stride-1 small-input stem below 96 px), "small" or "imagenet"
(see :mod:`kdedge.models.edge`).

Feature paths: ``stem``, ``stages.0`` .. (one per resolution: the blocks that share an output stride),
``head.act`` (the activated 576/960-channel map), ``head.flatten``. Logits: ``head.classifier``.
"""

from collections.abc import Sequence

import torch
from torch import nn

from kdedge.models.base import ConvClassifier, check_common, check_dropout, make_head
from kdedge.models.edge import InvertedResidual, conv_bn, head_conv, make_divisible, small_stem
from kdedge.models.registry import MODELS

BN_EPS = 1e-3
RE, HS = nn.ReLU, nn.Hardswish

# (kernel, expanded, out, se, activation, stride)
SMALL = (
    (3, 16, 16, True, RE, 2),
    (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1),
    (5, 288, 96, True, HS, 2), (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1),
)
LARGE = (
    (3, 16, 16, False, RE, 1),
    (3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2), (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1), (3, 184, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1), (3, 480, 112, True, HS, 1), (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1), (5, 960, 160, True, HS, 1),
)


class SqueezeExcite(nn.Module):
    """Channel gate: pool -> 1x1 conv -> ReLU -> 1x1 conv -> hard-sigmoid, times the input."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def build_mobilenet_v3(table: Sequence[tuple], last_channel: int, *, in_channels: int, num_classes: int,
                       image_size: int, dropout: float, stem: str) -> ConvClassifier:
    check_common(in_channels, num_classes, image_size)
    check_dropout("dropout", dropout)
    stride = 1 if small_stem(stem, image_size) else 2
    stem_layers = conv_bn(in_channels, 16, 3, stride, act=HS, bn_eps=BN_EPS)
    stages: list[nn.Module] = []
    blocks: list[nn.Module] = []
    prev = 16
    for kernel, expanded, out, se, act, s in table:
        if s == 2 and blocks:  # a new resolution starts a new stage
            stages.append(nn.Sequential(*blocks))
            blocks = []
        gate = SqueezeExcite(expanded, make_divisible(expanded // 4)) if se else None
        blocks.append(InvertedResidual(prev, expanded, out, kernel, s, act=act, se=gate, bn_eps=BN_EPS))
        prev = out
    stages.append(nn.Sequential(*blocks))
    features = 6 * prev
    fc = nn.Sequential(nn.Linear(features, last_channel), nn.Hardswish(inplace=True))
    head = make_head(features, num_classes, dropout, pre=head_conv(prev, features, HS, BN_EPS), fc=fc,
                     fc_features=last_channel)
    return ConvClassifier(stem_layers, stages, head)


@MODELS.register("mobilenet_v3_small")
def mobilenet_v3_small(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.2,
                       stem: str = "auto") -> nn.Module:
    return build_mobilenet_v3(SMALL, 1024, in_channels=in_channels, num_classes=num_classes,
                              image_size=image_size, dropout=dropout, stem=stem)


@MODELS.register("mobilenet_v3_large")
def mobilenet_v3_large(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.2,
                       stem: str = "auto") -> nn.Module:
    return build_mobilenet_v3(LARGE, 1280, in_channels=in_channels, num_classes=num_classes,
                              image_size=image_size, dropout=dropout, stem=stem)
