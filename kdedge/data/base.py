"""The dataset types and the registry every loader adds itself to. Images are uint8 tensors: held in
memory for the small built-in sets, memory-mapped from the on-disk cache for image folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import inspect

import torch

from kdedge.errors import KdedgeError
from kdedge.options import OptionError, check_options
from kdedge.registry import Registry

DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class ImageData:
    """Images and labels: in memory, or a memory map of an image folder's cache (pages from disk)."""

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
    val: ImageData | None = None  # given by the loader (image folders); else carved from train by the pipeline
    # training crop: "pad_crop" (random crop of the zero-padded image, for the small built-in sets) or
    # "random_resized_crop" (area scale in (min_crop_scale, 1), for photos at real sizes)
    train_transform: str = "pad_crop"
    min_crop_scale: float = 1.0
    notes: tuple[str, ...] = ()  # one line each, for the user (converted modes, skipped files, ...)
    split: dict | None = None  # how the loader cut train/val/test, for the manifest (None: the pipeline's split)


# Filled in by the pipeline (the candidate directories; the recipe's data.val_fraction and data.split_seed
# for loaders that cut their own validation split), never as a dataset option.
FIXED = frozenset({"roots", "val_fraction", "split_seed"})


def load_dataset(name: str, roots: Sequence[Path], *, val_fraction: float = 0.1, split_seed: int = 0,
                 **options: Any) -> DatasetSplits:
    loader = DATASETS.get(name)
    try:
        check_options(loader, options, FIXED, values=False)  # values: checked at recipe load
    except OptionError as exc:
        # a TypeError deep in a loader would be a traceback; say what the recipe may use instead
        raise KdedgeError(
            f"dataset {name!r} does not take option(s) {', '.join(exc.unknown)}; "
            f"allowed: {', '.join(exc.allowed) or 'none'} -- fix the data options in the recipe"
        ) from None
    takes = inspect.signature(loader).parameters
    split = {k: v for k, v in (("val_fraction", val_fraction), ("split_seed", split_seed)) if k in takes}
    return loader([Path(r) for r in roots], **split, **options)


def channel_stats(images: torch.Tensor, chunk: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std on the [0,1] scale, in float64 chunks so large sets stay cheap."""
    n, c = images.shape[0], images.shape[1]
    if n == 0:
        raise ValueError("cannot compute statistics of an empty image set")
    # at most ~128 MB of float64 per chunk whatever the image size (4096 images: the chunk the recorded
    # statistics of the small sets were computed with, kept so they stay bitwise the same)
    chunk = chunk or max(1, min(4096, 2**24 // max(1, images[0].numel())))
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
