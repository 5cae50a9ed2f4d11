"""CIFAR-style ResNets (He et al. 2016, section 4.2) as used throughout the KD literature.

A 3x3 stem conv, then three stages of ``n = (depth - 2) / 6`` basic blocks (two 3x3 convs each) with
widths ``w, 2w, 4w`` and strides 1, 2, 2, then average pooling and one Linear layer. Shortcuts that
change shape are 1x1 conv + BN projections (the KD-literature variant; the classic counts hold to
~2%). ``resnet8x4`` / ``resnet32x4`` use a 32-channel stem and stage widths 64/128/256.
``dropout`` is applied right before the classifier (default 0: the published nets have none).

Feature paths: ``stem`` (conv-BN-ReLU), ``stages.0`` .. ``stages.2`` (outputs of each stage, after the
final ReLU of its last block), ``head.flatten`` (pooled vector). Logits: ``head.classifier``.
"""

from typing import Callable

import torch
from torch import nn

from kdedge.models.registry import MODELS
from kdedge.models.base import blocks_per_stage as _blocks_per_stage
from kdedge.models.base import (
    ConvClassifier,
    check_common,
    check_dropout,
    check_positive,
    make_head,
)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def blocks_per_stage(depth: int) -> int:
    return _blocks_per_stage(depth, 2, "8, 14, 20, 32, 44, 56, 110")


def build_resnet(
    depth: int,
    widths: tuple[int, int, int],
    stem_width: int,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float,
) -> ConvClassifier:
    check_common(in_channels, num_classes, image_size)
    n = blocks_per_stage(depth)
    check_dropout("dropout", dropout)
    stem = nn.Sequential(
        nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
    )
    stages: list[nn.Module] = []
    prev = stem_width
    for i, w in enumerate(widths):
        blocks = []
        for j in range(n):
            # stride-2 3x3 conv with padding 1 maps 1x1 to 1x1, so small inputs never vanish
            blocks.append(BasicBlock(prev, w, 2 if (i > 0 and j == 0) else 1))
            prev = w
        stages.append(nn.Sequential(*blocks))
    return ConvClassifier(stem, stages, make_head(prev, num_classes, dropout))


@MODELS.register("resnet")
def resnet(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    depth: int = 20,
    width: int = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """Generic CIFAR ResNet: stem and first stage ``width`` wide (resnet8x4 has a narrower stem)."""
    check_positive("width", width)
    return build_resnet(
        depth,
        (width, 2 * width, 4 * width),
        width,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        dropout=dropout,
    )


def _named(depth: int, widths: tuple[int, int, int], stem_width: int, name: str) -> Callable[..., nn.Module]:
    def variant(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
        return build_resnet(
            depth,
            widths,
            stem_width,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            dropout=dropout,
        )

    variant.__name__ = variant.__qualname__ = name
    variant.__doc__ = f"CIFAR ResNet-{depth}, stem {stem_width}, stage widths {widths}."
    return variant


for _depth in (8, 14, 20, 32, 44, 56, 110):
    MODELS.register(f"resnet{_depth}")(_named(_depth, (16, 32, 64), 16, f"resnet{_depth}"))
for _depth in (8, 32):
    MODELS.register(f"resnet{_depth}x4")(_named(_depth, (64, 128, 256), 32, f"resnet{_depth}x4"))
del _depth
