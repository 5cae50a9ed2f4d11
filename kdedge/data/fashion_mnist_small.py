"""A real 4000/1000 stratified Fashion-MNIST subset shipped inside the package (works offline).

The files in embedded/ were made by `python -m kdedge.data.make_embedded` (see embedded/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kdedge.data.base import DATASETS, DatasetSplits, channel_stats
from kdedge.data.fashion_mnist import CLASSES
from kdedge.data.idx_splits import find_idx_set, load_idx_set
from kdedge.errors import KdedgeError

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
FIX = "reinstall kdedge (the package data kdedge/data/embedded/ is incomplete)"


@DATASETS.register("fashion_mnist_small")
def fashion_mnist_small(roots: Sequence[Path]) -> DatasetSplits:
    del roots  # the data ships with the package; user roots play no part
    found = find_idx_set([EMBEDDED_DIR])
    if found is None:
        raise KdedgeError(f"{EMBEDDED_DIR}: embedded Fashion-MNIST subset files are missing; {FIX}")
    train, test = load_idx_set(found[1], len(CLASSES), FIX)
    # statistics of this subset itself (cheap: 4000 images), so normalisation matches what is trained on
    mean, std = channel_stats(train.images)
    return DatasetSplits("fashion_mnist_small", train, test, CLASSES, mean, std, hflip_ok=True,
                         source=str(EMBEDDED_DIR))  # fmt: skip
