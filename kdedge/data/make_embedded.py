"""Make the embedded Fashion-MNIST subset from the full idx files (run once by a maintainer).

    python -m kdedge.data.make_embedded [--source DIR] [--out DIR] [--train-per-class 400]
                                        [--test-per-class 100] [--seed 0]

Picks, per class, a seeded random sample of the train and test images (kept in their original
order) and writes the four standard idx .gz files. Same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from kdedge.data.fashion_mnist import DEBIAN_DIR, FIX
from kdedge.data.idx import encode_idx, gzip_bytes, read_idx
from kdedge.data.idx_splits import STEMS, find_idx_set
from kdedge.errors import KdedgeError
from kdedge.io import write_bytes

DEFAULT_OUT = Path(__file__).resolve().parent / "embedded"


def stratified_pick(labels: np.ndarray, per_class: int, generator: torch.Generator) -> np.ndarray:
    """Sorted indices of `per_class` random samples of every class (classes in ascending order)."""
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise ValueError(f"class {cls} has only {len(members)} samples, {per_class} requested")
        order = torch.randperm(len(members), generator=generator)[:per_class].numpy()
        picked.append(members[order])
    return np.sort(np.concatenate(picked))


def make_embedded(source: Path, out: Path, train_per_class: int, test_per_class: int, seed: int) -> list[Path]:
    found = find_idx_set([source])
    if found is None:
        raise KdedgeError(f"{source}: the four Fashion-MNIST idx files are not there; {FIX}")
    files = found[1]
    generator = torch.Generator().manual_seed(seed)
    written = []
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images = read_idx(files[f"{split}_images"], 3, FIX)
        labels = read_idx(files[f"{split}_labels"], 1, FIX)
        keep = stratified_pick(labels, per_class, generator)
        for kind, array in (("images", images[keep]), ("labels", labels[keep])):
            path = out / (STEMS[f"{split}_{kind}"] + ".gz")
            write_bytes(path, gzip_bytes(encode_idx(array)))
            os.chmod(path, 0o644)  # atomic writes create 0600 temp files; package data must be world-readable
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in make_embedded(args.source, args.out, args.train_per_class, args.test_per_class, args.seed):
        print(f"{path}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
