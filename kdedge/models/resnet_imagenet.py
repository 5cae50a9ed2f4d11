"""ImageNet ResNet-18/34/50 (He et al. 2016), as torchvision's ``resnet18`` / ``resnet34`` / ``resnet50``.

Not the CIFAR family of :mod:`kdedge.models.resnet` (``resnet8`` .. ``resnet110``, three stages of 16-64
channels): four stages of widths 64/128/256/512 with 2-2-2-2 (18) or 3-4-6-3 (34) basic blocks, or
3-4-6-3 bottleneck blocks with 4x expansion (50; stride on the 3x3 conv, "ResNet v1.5"), 1x1 conv + BN
projection shortcuts where the shape changes, global pooling and a Linear classifier. At 224 px,
3 channels, 1000 classes: 11,689,512 / 21,797,672 / 25,557,032 parameters and ~1.81 / ~3.66 / ~4.09
GMACs, as torchvision.

``stem``: "auto" (default), "small" or "imagenet". The ImageNet stem is a 7x7 stride-2 conv and a 3x3
stride-2 max pool; the small-input stem (chosen by "auto" below 96 px, see :mod:`kdedge.models.edge`)
is a 3x3 stride-1 conv and no pool, as the CIFAR ResNet-18 of the KD benchmarks.
``dropout`` before the classifier (default 0, as published).

Feature paths: ``stem``, ``stages.0`` .. ``stages.3``, ``head.flatten``. Logits: ``head.classifier``.
"""

from typing import Callable

import torch
from torch import nn

from kdedge.models.base import ConvClassifier, check_common, check_dropout, make_head
from kdedge.models.edge import conv_bn, pooled_stem
from kdedge.models.registry import MODELS

WIDTHS = (64, 128, 256, 512)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return conv_bn(cin, cout, 1, stride, act=None)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 3, stride), conv_bn(width, width, 3, act=None))
        self.shortcut = _shortcut(cin, width, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride),
                                  conv_bn(width, out, 1, act=None))
        self.shortcut = _shortcut(cin, out, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def build_resnet_imagenet(block: type[BasicBlock] | type[Bottleneck], repeats: tuple[int, ...], *, in_channels: int,
                          num_classes: int, image_size: int, dropout: float, stem: str) -> ConvClassifier:
    check_common(in_channels, num_classes, image_size)
    check_dropout("dropout", dropout)
    stem_layers = pooled_stem(in_channels, 64, 7, stem=stem, image_size=image_size)
    stages: list[nn.Module] = []
    prev = 64
    for i, (width, n) in enumerate(zip(WIDTHS, repeats)):
        blocks = []
        for j in range(n):
            blocks.append(block(prev, width, 2 if (i > 0 and j == 0) else 1))
            prev = width * block.expansion
        stages.append(nn.Sequential(*blocks))
    return ConvClassifier(stem_layers, stages, make_head(prev, num_classes, dropout))


def _named(name: str, block: type[BasicBlock] | type[Bottleneck], repeats: tuple[int, ...]) -> Callable[..., nn.Module]:
    def variant(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0,
                stem: str = "auto") -> nn.Module:
        return build_resnet_imagenet(block, repeats, in_channels=in_channels, num_classes=num_classes,
                                     image_size=image_size, dropout=dropout, stem=stem)

    variant.__name__ = variant.__qualname__ = name
    variant.__doc__ = f"ImageNet ResNet ({block.__name__}, blocks per stage {repeats})."
    return variant


for _name, _block, _repeats in (("resnet18", BasicBlock, (2, 2, 2, 2)), ("resnet34", BasicBlock, (3, 4, 6, 3)),
                                ("resnet50", Bottleneck, (3, 4, 6, 3))):
    MODELS.register(_name)(_named(_name, _block, _repeats))
del _name, _block, _repeats
