"""MNIST (60k/10k, 28x28 grey) from the four standard idx files the user supplies."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kdedge.data.base import DATASETS, DatasetSplits
from kdedge.data.idx_splits import candidate_dirs, find_idx_set, load_idx_set, not_found

CLASSES = tuple(str(d) for d in range(10))
# The usual MNIST training-set pixel mean/std (as used by the PyTorch MNIST example).
MEAN = (0.1307,)
STD = (0.3081,)
FIX = (
    "put the four MNIST idx files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in the recipe's data.root or "
    "$KDEDGE_DATA, or in a mnist/ or MNIST/raw/ folder under it"
)


@DATASETS.register("mnist")
def mnist(roots: Sequence[Path]) -> DatasetSplits:
    dirs = candidate_dirs(roots, ("mnist", "MNIST/raw"), ())
    found = find_idx_set(dirs)
    if found is None:
        raise not_found("MNIST", dirs, FIX)
    directory, files = found
    train, test = load_idx_set(files, len(CLASSES), FIX)
    return DatasetSplits("mnist", train, test, CLASSES, MEAN, STD, hflip_ok=False, source=str(directory))
