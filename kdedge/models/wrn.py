"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016): pre-activation basic blocks.

A 3x3 stem conv to 16 channels, three stages of ``n = (depth - 4) / 6`` blocks with widths
``16k, 32k, 64k`` (k = ``widen_factor``) and strides 1, 2, 2; each block is BN-ReLU-conv-BN-ReLU-
Dropout(``block_dropout``, the paper's in-block dropout)-conv, with a 1x1 conv shortcut where the shape
changes. Because blocks are pre-activation, the final BN-ReLU lives at the start of the head.
``dropout`` is applied right before the classifier (default 0).

Feature paths: ``stem`` (conv), ``stages.0`` .. ``stages.2`` (stage outputs, *pre-activation*: a sum,
not yet through BN-ReLU), ``head.act`` (the activated last map), ``head.flatten`` (pooled vector).
Logits: ``head.classifier``.
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


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, block_dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(block_dropout)  # always present, like the head's (MC dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.act2(self.bn2(out))))
        # a projection reads the activated input, as in the paper's implementation
        return out + (x if self.shortcut is None else self.shortcut(pre))


def blocks_per_stage(depth: int) -> int:
    return _blocks_per_stage(depth, 4, "10, 16, 22, 28, 40")


def build_wrn(
    depth: int,
    widen_factor: int,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float,
    block_dropout: float,
) -> ConvClassifier:
    check_common(in_channels, num_classes, image_size)
    n = blocks_per_stage(depth)
    check_positive("widen_factor", widen_factor)
    check_dropout("dropout", dropout)
    check_dropout("block_dropout", block_dropout)
    stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
    stages: list[nn.Module] = []
    prev = 16
    for i, w in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
        blocks = []
        for j in range(n):
            blocks.append(WideBlock(prev, w, 2 if (i > 0 and j == 0) else 1, block_dropout))
            prev = w
        stages.append(nn.Sequential(*blocks))
    head = make_head(
        prev, num_classes, dropout, pre=[("norm", nn.BatchNorm2d(prev)), ("act", nn.ReLU(inplace=True))]
    )
    return ConvClassifier(stem, stages, head)


@MODELS.register("wrn")
def wrn(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    depth: int = 16,
    widen_factor: int = 2,
    dropout: float = 0.0,
    block_dropout: float = 0.0,
) -> nn.Module:
    return build_wrn(
        depth,
        widen_factor,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        dropout=dropout,
        block_dropout=block_dropout,
    )


def _named(depth: int, widen_factor: int) -> Callable[..., nn.Module]:
    def variant(
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dropout: float = 0.0,
        block_dropout: float = 0.0,
    ) -> nn.Module:
        return build_wrn(
            depth,
            widen_factor,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            dropout=dropout,
            block_dropout=block_dropout,
        )

    variant.__name__ = variant.__qualname__ = f"wrn_{depth}_{widen_factor}"
    variant.__doc__ = f"WRN-{depth}-{widen_factor}."
    return variant


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    MODELS.register(f"wrn_{_depth}_{_k}")(_named(_depth, _k))
del _depth, _k
