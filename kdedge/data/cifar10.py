"""CIFAR-10 (50k/10k, 32x32 RGB) from the standard "python version" batches or their archive."""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from kdedge.data.base import DATASETS, DatasetSplits, ImageData
from kdedge.data.safe_pickle import UnsafePickle, safe_loads
from kdedge.errors import KdedgeError

BATCH_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
NEEDED = (*TRAIN_BATCHES, "test_batch", "batches.meta")
# Widely quoted per-channel mean/std of the 50k CIFAR-10 training images.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
FIX = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and place it "
    "(or its extracted cifar-10-batches-py/ folder) under the recipe's data.root or $KDEDGE_DATA"
)

MAX_MEMBER_BYTES = 256 * 2**20  # the real batches are 31 MB each

Reader = Callable[[str], bytes]  # batch file name -> its bytes


@DATASETS.register("cifar10")
def cifar10(roots: Sequence[Path]) -> DatasetSplits:
    searched: list[Path] = []
    for root in roots:
        root = Path(root)
        for directory in (root / BATCH_DIR, root, root / "cifar10" / BATCH_DIR):
            searched.append(directory)
            if all((directory / name).is_file() for name in NEEDED):
                return _load(lambda name, d=directory: _read_file(d / name), str(directory))
        for archive in (root / ARCHIVE, root / "cifar10" / ARCHIVE):
            searched.append(archive)
            if archive.is_file():
                return _from_archive(archive)
    where = ", ".join(str(p) for p in searched) or "(no directories given)"
    raise KdedgeError(f"CIFAR-10 not found: no {BATCH_DIR}/ folder with {', '.join(NEEDED)} "
                      f"and no {ARCHIVE}; searched: {where}; {FIX}")  # fmt: skip


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > MAX_MEMBER_BYTES:
                raise KdedgeError(f"{path}: over {MAX_MEMBER_BYTES:,} bytes, a real batch is about 31 MB; {FIX}")
            return fh.read()
    except OSError as exc:
        raise KdedgeError(f"{path}: cannot read ({exc}); {FIX}") from None


def _from_archive(archive: Path) -> DatasetSplits:
    # read members straight from the archive: nothing is extracted, so no path tricks apply
    blobs = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in NEEDED:
                try:
                    info = tar.getmember(f"{BATCH_DIR}/{name}")
                except KeyError:
                    raise KdedgeError(f"{archive}: archive has no {BATCH_DIR}/{name} member; {FIX}") from None
                member = tar.extractfile(info) if info.isfile() else None
                if member is None:
                    raise KdedgeError(f"{archive}: {BATCH_DIR}/{name} is not a regular file; {FIX}")
                if info.size > MAX_MEMBER_BYTES:  # checked before reading: a gzip bomb is never inflated
                    raise KdedgeError(f"{archive}: member {BATCH_DIR}/{name} is over {MAX_MEMBER_BYTES:,} bytes, "
                                      f"a real one is about 31 MB; not a CIFAR-10 archive; {FIX}")
                blobs[name] = member.read()
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise KdedgeError(f"{archive}: cannot read the archive ({exc}); {FIX}") from None
    return _load(lambda name: blobs[name], str(archive))


def _load(read: Reader, source: str) -> DatasetSplits:
    meta = _unpickle(read, "batches.meta", source)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise KdedgeError(f"{source}/batches.meta: no label_names list; {FIX}")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    parts = [_batch(read, name, source, len(classes)) for name in TRAIN_BATCHES]
    train = ImageData(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    test = _batch(read, "test_batch", source, len(classes))
    return DatasetSplits("cifar10", train, test, classes, MEAN, STD, hflip_ok=True, source=source)


def _unpickle(read: Reader, name: str, source: str) -> object:
    try:
        return safe_loads(read(name))
    except UnsafePickle as exc:
        raise KdedgeError(
            f"{source}/{name}: refused to unpickle, it references {exc} which a CIFAR-10 batch never "
            f"needs (tampered or not a CIFAR-10 file); {FIX}"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise KdedgeError(f"{source}/{name}: corrupt pickle ({exc}); {FIX}") from None


def _batch(read: Reader, name: str, source: str, n_classes: int) -> ImageData:
    batch = _unpickle(read, name, source)
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise KdedgeError(f"{source}/{name}: 'data' is not a uint8 [N, 3072] array; {FIX}")
    try:
        labels_arr = np.asarray(labels if labels is not None else [], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a label such as 2**70
        raise KdedgeError(f"{source}/{name}: 'labels' is not a list of integers in 0..{n_classes - 1}; {FIX}") from None
    if labels_arr.shape != (data.shape[0],):
        raise KdedgeError(f"{source}/{name}: {labels_arr.size} labels for {data.shape[0]} images; {FIX}")
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() >= n_classes):
        raise KdedgeError(f"{source}/{name}: labels outside 0..{n_classes - 1}; {FIX}")
    # each row is the red plane, then green, then blue, each 32x32 row-major
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return ImageData(images, torch.from_numpy(labels_arr))
