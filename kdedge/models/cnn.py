"""A small plain conv net with BatchNorm (the CNN teachers/students of seeds 001 and 002).

Each entry of ``channels`` is one stage: 3x3 conv -> BN -> ReLU -> 2x2 max pool (the pool is
skipped once the map is 1x1, so 8x8 inputs work with any number of stages).
Feature paths: ``stages.0``, ``stages.1``, ... (pooled maps), ``head.flatten`` (pooled vector);
``stem`` is ``nn.Identity`` (the first stage takes the image). Logits: ``head.classifier``.
"""

from torch import nn

from kdedge.models.registry import MODELS
from kdedge.models.base import (
    ConvClassifier,
    check_common,
    check_dropout,
    check_widths,
    conv_bn_relu,
    halve_or_keep,
    make_head,
)


@MODELS.register("cnn")
def cnn(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    channels: list[int] = [32, 64],  # noqa: B006 - read only; the default is part of the schema
    dropout: float = 0.0,
) -> nn.Module:
    check_common(in_channels, num_classes, image_size)
    channels = check_widths("channels", channels)
    check_dropout("dropout", dropout)
    stages: list[nn.Module] = []
    prev, size = in_channels, image_size
    for c in channels:
        stage = conv_bn_relu(prev, c)
        pool, size = halve_or_keep(size)
        if pool:
            stage.append(nn.MaxPool2d(2))
        stages.append(stage)
        prev = c
    return ConvClassifier(nn.Identity(), stages, make_head(prev, num_classes, dropout))
