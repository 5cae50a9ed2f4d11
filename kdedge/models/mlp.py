"""Fully connected classifier on the flattened image (the small students of seeds 001 and 002).

Feature paths: ``layers.0``, ``layers.1``, ... (one per hidden width; each is Linear -> ReLU ->
Dropout, so the output is the activated, dropped-out hidden vector); logits: ``classifier``.
The dropout after the last hidden layer is the one right before the classifier (always present).
"""

import torch
from torch import nn

from kdedge.models.registry import MODELS
from kdedge.models.base import check_common, check_dropout, check_widths, init_weights


class MLP(nn.Module):
    classifier_path = "classifier"

    def __init__(self, in_features: int, widths: list[int], num_classes: int, dropout: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        prev = in_features
        for w in widths:
            blocks.append(nn.Sequential(nn.Linear(prev, w), nn.ReLU(inplace=True), nn.Dropout(dropout)))
            prev = w
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(prev, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten is logical (C, H, W) order, so channels_last inputs give the same result
        return self.classifier(self.layers(torch.flatten(x, 1)))

    def feature_paths(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.layers))]


@MODELS.register("mlp")
def mlp(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    widths: list[int] = [512, 256],  # noqa: B006 - read only; the default is part of the schema
    dropout: float = 0.0,
) -> nn.Module:
    check_common(in_channels, num_classes, image_size)
    widths = check_widths("widths", widths)
    check_dropout("dropout", dropout)
    return MLP(in_channels * image_size * image_size, widths, num_classes, dropout)
