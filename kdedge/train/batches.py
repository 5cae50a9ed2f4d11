"""Turning stored uint8 images into model inputs, and iterating over them in a seeded order."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdedge.data import augment


@dataclass(frozen=True)
class InputStats:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, len(self.mean), 1, 1)
        return (torch.tensor(self.mean, device=device).view(shape),
                torch.tensor(self.std, device=device).view(shape))


@dataclass(frozen=True)
class AugmentSpec:
    padding: int
    hflip: bool


def prepare_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *,
                  augmentation: AugmentSpec | None = None, generator: torch.Generator | None = None,
                  channels_last: bool = False) -> torch.Tensor:
    """uint8 [B,C,H,W] -> normalised float32; augmentation happens on [0,1] pixels so padding is black."""
    x = images.to(mean.device, non_blocking=True).float().div_(255)
    if augmentation is not None and (augmentation.padding > 0 or augmentation.hflip):
        x = augment(x, padding=augmentation.padding, hflip=augmentation.hflip, generator=generator)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
