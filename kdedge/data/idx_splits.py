"""Find and load the four standard idx files (MNIST-style) from candidate directories."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from kdedge.data.base import ImageData
from kdedge.data.idx import read_idx
from kdedge.errors import KdedgeError

STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def candidate_dirs(roots: Sequence[Path], subdirs: Sequence[str], defaults: Sequence[Path]) -> list[Path]:
    """Each user root, then its conventional subfolders, in priority order; built-in defaults last."""
    dirs: list[Path] = []
    for root in roots:
        dirs.append(Path(root))
        dirs.extend(Path(root) / sub for sub in subdirs)
    dirs.extend(defaults)
    return list(dict.fromkeys(dirs))  # drop duplicates, keep the order


def find_idx_set(dirs: Sequence[Path]) -> tuple[Path, dict[str, Path]] | None:
    """The first directory holding all four files (plain or .gz), with their paths."""
    for d in dirs:
        files = {key: _one_of(d, stem) for key, stem in STEMS.items()}
        if all(files.values()):
            return d, files  # type: ignore[return-value]
    return None


def _one_of(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        path = directory / name
        if path.is_file():
            return path
    return None


def load_idx_set(files: dict[str, Path], n_classes: int, fix: str) -> tuple[ImageData, ImageData]:
    return (
        _load_pair(files["train_images"], files["train_labels"], n_classes, fix),
        _load_pair(files["test_images"], files["test_labels"], n_classes, fix),
    )


def _load_pair(images_path: Path, labels_path: Path, n_classes: int, fix: str) -> ImageData:
    images = read_idx(images_path, 3, fix)
    labels = read_idx(labels_path, 1, fix)
    if images.shape[0] != labels.shape[0]:
        raise KdedgeError(
            f"{labels_path}: has {labels.shape[0]} labels but {images_path} has {images.shape[0]} "
            f"images (mismatched or truncated pair); {fix}"
        )
    if labels.size and int(labels.max()) >= n_classes:
        raise KdedgeError(
            f"{labels_path}: label {int(labels.max())} is out of range for {n_classes} classes; {fix}"
        )
    return ImageData(
        images=torch.from_numpy(images.copy()).unsqueeze(1),  # copy: frombuffer arrays are read-only
        labels=torch.from_numpy(labels.astype(np.int64)),
    )


def not_found(what: str, dirs: Sequence[Path], how: str) -> KdedgeError:
    names = ", ".join(f"{s}(.gz)" for s in STEMS.values())
    searched = ", ".join(str(d) for d in dirs) or "(no directories given)"
    return KdedgeError(f"{what} not found: no directory holds all of {names}; searched: {searched}; {how}")
