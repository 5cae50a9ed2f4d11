"""scikit-learn's 8x8 handwritten digits (1,797 images), split 80/20 stratified."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from kdedge.data.base import DATASETS, DatasetSplits, ImageData, channel_stats
from kdedge.data.optional import require
from kdedge.data.split import split_train_val

CLASSES = tuple(str(d) for d in range(10))
SPLIT_SEED = 0  # fixed: the train/test split is part of the dataset's definition


@DATASETS.register("digits")
def digits(roots: Sequence[Path]) -> DatasetSplits:
    del roots  # the data ships with scikit-learn
    require("sklearn", "digits")
    from sklearn.datasets import load_digits  # optional dependency: import only when used

    bunch = load_digits()
    # values are counts 0..16; stretch them to the 0..255 range the other datasets use
    pixels = np.rint(np.asarray(bunch.data, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    everything = ImageData(
        images=torch.from_numpy(pixels.reshape(-1, 1, 8, 8)),
        labels=torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)),
    )
    train, test = split_train_val(everything, 0.2, SPLIT_SEED)
    mean, std = channel_stats(train.images)
    source = "sklearn.datasets.load_digits"
    return DatasetSplits("digits", train, test, CLASSES, mean, std, hflip_ok=False, source=source)
