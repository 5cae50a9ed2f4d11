"""The test split as one file, so that a remote device benchmarks exactly the images the workstation
has, without a dataset of its own: `kdedge bench RUN --host` writes it, `kdedge bench --test-data FILE`
(run there) reads it.

A .npz with uint8 images [N, C, H, W], int64 labels and a JSON header (dataset, classes, normalisation
and the sha256 of header + images + labels). Read with allow_pickle=False, so the file can hold no
code; every field is checked against the run's manifest before a single image is used.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from kdedge.data.base import ImageData
from kdedge.errors import KdedgeError
from kdedge.inputs import InputStats
from kdedge.io import atomic_path

SPLIT_FORMAT = "kdedge-test-data-1"
SPLIT_FILE = "test_data.npz"
_RESEND = "send it again with `kdedge bench RUN --host ...`"


@dataclass(frozen=True)
class BenchSplit:
    """The images a bench measures on, wherever they came from (the dataset or a --test-data file)."""

    dataset: str
    images: torch.Tensor      # uint8 [N, C, H, W]
    labels: torch.Tensor      # int64 [N]
    stats: InputStats
    sha256: str               # of the header fields + images + labels: equal sha = the same test data
    source: str               # "dataset" or the --test-data path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def image_data(self) -> ImageData:
        return ImageData(self.images, self.labels)


def split_from_dataset(dataset: str, test: ImageData, stats: InputStats) -> BenchSplit:
    images, labels = test.images.contiguous(), test.labels.to(torch.int64).contiguous()
    header = _header(dataset, images.numpy(), labels.numpy(), stats)
    return BenchSplit(dataset, images, labels, stats, header["sha256"], "dataset")


def write_split(path: Path, split: BenchSplit, classes: Iterable[str]) -> Path:
    """Atomically write the split (with the class names, for a human reading the header)."""
    images, labels = split.images.numpy(), split.labels.numpy()
    header = {**_header(split.dataset, images, labels, split.stats), "classes": list(classes)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=images, labels=labels, header=np.array(json.dumps(header)))
    return path


def read_split(path: Path, manifest: dict[str, Any], export_entries: Iterable[tuple[str, dict[str, Any]]]
               ) -> BenchSplit:
    """The split in `path`, checked against the run's recorded data and the exports' input specs."""
    images, labels, header = _load(path)
    if header.get("format") != SPLIT_FORMAT:
        raise KdedgeError(f"{path}: field format is {header.get('format')!r}, not {SPLIT_FORMAT!r}; "
                          f"write it with the same kdedge version, or {_RESEND}")
    stats = _stats(path, header)
    expected = _header(str(header.get("dataset")), images, labels, stats)["sha256"]
    if header.get("sha256") != expected:
        raise KdedgeError(f"{path}: field sha256 does not match the images and labels in the file (changed or "
                          f"damaged on the way); {_RESEND}")
    _check_arrays(path, images, labels)
    _check_against_run(path, header, images, labels, manifest.get("data") or {})
    for file, entry in export_entries:
        _check_export_input(path, images, file, entry)
    return BenchSplit(str(header["dataset"]), torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)),
                      stats, expected, str(path))


def _header(dataset: str, images: np.ndarray, labels: np.ndarray, stats: InputStats) -> dict[str, Any]:
    fields = {"format": SPLIT_FORMAT, "dataset": dataset, "images_shape": list(images.shape),
              "mean": [float(v) for v in stats.mean], "std": [float(v) for v in stats.std]}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return {**fields, "sha256": digest.hexdigest()}


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("images", "labels", "header") if k not in npz.files]
            if missing:
                raise KdedgeError(f"{path}: no {', '.join(missing)} in the file; not a kdedge test-data file; "
                                  f"{_RESEND}")
            images, labels, header_text = npz["images"], npz["labels"], str(npz["header"])
    except KdedgeError:
        raise
    except FileNotFoundError:
        raise KdedgeError(f"{path}: no such test-data file; {_RESEND}") from None
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and the OS raise assorted types for a bad file
        raise KdedgeError(f"{path}: cannot read it as a test-data file ({type(exc).__name__}: {exc}); "
                          f"{_RESEND}") from None
    try:
        header = json.loads(header_text)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise KdedgeError(f"{path}: field header is not a JSON object; {_RESEND}")
    return images, labels, header


def _stats(path: Path, header: dict[str, Any]) -> InputStats:
    mean, std = header.get("mean"), header.get("std")
    ok = (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) > 0
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in mean + std)
          and all(v > 0 for v in std))
    if not ok:  # JSON allows NaN and Infinity: a NaN mean would turn every image into NaN
        raise KdedgeError(f"{path}: fields mean/std must be equal-length lists of finite numbers (std > 0); "
                          f"{_RESEND}")
    return InputStats(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def _check_arrays(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise KdedgeError(f"{path}: field images must be uint8 [N, C, H, W] with N > 0, not {images.dtype} "
                          f"{list(images.shape)}; {_RESEND}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
        raise KdedgeError(f"{path}: field labels must be {len(images)} integers (one per image), not {labels.dtype} "
                          f"{list(labels.shape)}; {_RESEND}")


def _check_against_run(path: Path, header: dict[str, Any], images: np.ndarray, labels: np.ndarray,
                       recorded: dict[str, Any]) -> None:
    """The run's manifest says what data it was made with; a file of other data is refused by field."""
    found = {"dataset": header["dataset"], "input_shape": list(images.shape[1:]), "mean": header["mean"],
             "std": header["std"], "n_test": len(labels)}
    for key, value in found.items():
        if key in recorded and recorded[key] != value:
            raise KdedgeError(f"{path}: {key} is {value!r} but the run was made with {recorded[key]!r}; "
                              f"the file is not this run's test split; {_RESEND}")
    # the run's class count, else the file's own class list: a label outside it indexes past the logits
    classes = recorded.get("num_classes")
    if classes is None and isinstance(header.get("classes"), list):
        classes = len(header["classes"])
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise KdedgeError(f"{path}: no class count to check field labels against (the run's data.num_classes "
                          f"and the file's classes are missing); {_RESEND}")
    if labels.min() < 0 or labels.max() >= classes:
        raise KdedgeError(f"{path}: field labels range {int(labels.min())}..{int(labels.max())} but the run has "
                          f"{classes} classes (0..{classes - 1}); {_RESEND}")


def _check_export_input(path: Path, images: np.ndarray, file: str, entry: dict[str, Any]) -> None:
    shape = (entry.get("input") or {}).get("shape")
    if not shape:
        return  # an export recorded without its input spec: bench's own ONNX input check still runs
    dims, have = list(shape[1:]), images.shape[1:]
    if len(dims) != len(have) or any(isinstance(d, int) and d != i for d, i in zip(dims, have, strict=True)):
        raise KdedgeError(f"{path}: field images is [N, {', '.join(map(str, images.shape[1:]))}] but {file} takes "
                          f"[batch, {', '.join(map(str, dims))}]; {_RESEND}")
