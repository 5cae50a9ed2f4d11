"""Fashion-MNIST (60k/10k, 28x28 grey) from the four standard idx files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kdedge.data.base import DATASETS, DatasetSplits
from kdedge.data.idx_splits import candidate_dirs, find_idx_set, load_idx_set, not_found

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
# Pixel mean/std of the 60k training images on the [0,1] scale (recomputed from the Debian files).
MEAN = (0.2860,)
STD = (0.3530,)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FIX = (
    "install the Debian package (apt-get install dataset-fashion-mnist) or put the four "
    "Fashion-MNIST idx files under the recipe's data.root or $KDEDGE_DATA"
)


@DATASETS.register("fashion_mnist")
def fashion_mnist(roots: Sequence[Path]) -> DatasetSplits:
    dirs = candidate_dirs(roots, ("fashion-mnist", "FashionMNIST/raw"), (DEBIAN_DIR,))
    found = find_idx_set(dirs)
    if found is None:
        raise not_found("Fashion-MNIST", dirs, FIX)
    directory, files = found
    train, test = load_idx_set(files, len(CLASSES), FIX)
    return DatasetSplits("fashion_mnist", train, test, CLASSES, MEAN, STD, hflip_ok=True, source=str(directory))
