"""Stored uint8 images to model inputs: the dataset's per-channel statistics and the one normalisation,
(pixel / 255 - mean) / std, that training, export, the bench and every runtime share. Light on purpose
(numpy and torch only), so inference code never has to import the training stack for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class InputStats:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, len(self.mean), 1, 1)
        return (torch.tensor(self.mean, device=device).view(shape),
                torch.tensor(self.std, device=device).view(shape))


def normalise_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *,
                    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    channels_last: bool = False) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float32 model input on mean's device. `augment` (training's) runs on the [0, 1]
    pixels in between, so its padding is black."""
    x = images.to(mean.device, non_blocking=True).float().div_(255)
    if augment is not None:
        x = augment(x)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def normalise(images: np.ndarray, stats: InputStats) -> np.ndarray:
    """The numpy form (ONNX Runtime, TensorRT, the bench's predictors): the same math, on the CPU."""
    if not images.flags.writeable:
        images = images.copy()  # torch.from_numpy shares memory and warns on read-only arrays
    mean, std = stats.tensors(torch.device("cpu"))
    return normalise_batch(torch.from_numpy(images), mean, std).numpy()
