"""Turning stored uint8 images into model inputs, and iterating over them in a seeded order."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from kdedge.data import augment
from kdedge.data.transforms import random_resized_crop
from kdedge.inputs import normalise_batch


@dataclass(frozen=True)
class AugmentSpec:
    padding: int
    hflip: bool
    crop: str = "pad_crop"  # or "random_resized_crop" (image folders; `padding` then unused)
    min_crop_scale: float = 1.0


def prepare_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *,
                  augmentation: AugmentSpec | None = None, generator: torch.Generator | None = None,
                  channels_last: bool = False) -> torch.Tensor:
    """uint8 [B,C,H,W] -> normalised float32; augmentation happens on [0,1] pixels so padding is black."""
    on_pixels = None
    if augmentation is not None and augmentation.crop == "random_resized_crop":
        on_pixels = partial(random_resized_crop, min_scale=augmentation.min_crop_scale, hflip=augmentation.hflip,
                            generator=generator)
    elif augmentation is not None and (augmentation.padding > 0 or augmentation.hflip):
        on_pixels = partial(augment, padding=augmentation.padding, hflip=augmentation.hflip, generator=generator)
    return normalise_batch(images, mean, std, augment=on_pixels, channels_last=channels_last)
