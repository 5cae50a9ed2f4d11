"""The in-memory dataset types and the registry every loader adds itself to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from kdedge.errors import KdedgeError
from kdedge.options import OptionError, check_options
from kdedge.registry import Registry

DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class ImageData:
    """Images and labels held fully in memory (the supported datasets are small)."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageData":
        return ImageData(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DatasetSplits:
    name: str
    train: ImageData
    test: ImageData
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the [0,1] scale
    std: tuple[float, ...]
    hflip_ok: bool  # does a horizontal flip keep the label? (clothes yes, digits/signs no)
    source: str  # the file/dir/package the data came from, recorded in the manifest


# Filled in by the pipeline (the candidate directories), never by a recipe.
FIXED = frozenset({"roots"})


def load_dataset(name: str, roots: Sequence[Path], **options: Any) -> DatasetSplits:
    loader = DATASETS.get(name)
    try:
        check_options(loader, options, FIXED, values=False)  # values: checked at recipe load
    except OptionError as exc:
        # a TypeError deep in a loader would be a traceback; say what the recipe may use instead
        raise KdedgeError(
            f"dataset {name!r} does not take option(s) {', '.join(exc.unknown)}; "
            f"allowed: {', '.join(exc.allowed) or 'none'} -- fix the data options in the recipe"
        ) from None
    return loader([Path(r) for r in roots], **options)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std on the [0,1] scale, in float64 chunks so large sets stay cheap."""
    n, c = images.shape[0], images.shape[1]
    if n == 0:
        raise ValueError("cannot compute statistics of an empty image set")
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
