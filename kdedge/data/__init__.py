"""Datasets held in memory as uint8 tensors, with splitting, normalisation and augmentation.

Each dataset is one function registered in DATASETS by its own module; importing this package
imports them all so every name is available.
"""

from __future__ import annotations

from kdedge.data.base import DATASETS, DatasetSplits, ImageData, channel_stats, load_dataset
from kdedge.data.split import split_train_val
from kdedge.data.transforms import augment

# imported for their registration side effect
from kdedge.data import (  # noqa: E402,F401  isort: skip
    cifar10,
    digits,
    fashion_mnist,
    fashion_mnist_small,
    image_folder,
    mnist,
    mnist_5k,
)

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "ImageData",
    "augment",
    "channel_stats",
    "load_dataset",
    "split_train_val",
]
