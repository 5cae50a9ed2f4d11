"""The on-disk uint8 cache of an image folder at the training resolution, memory-mapped.

Each split is decoded once into <cache>/image_folder/<key>/<split>.npy ([N, C, S, S] uint8), keyed by a
hash of everything that decides its bytes: the files (path, size, mtime), their labels and split, the
image size, colour, resize rule and format version. A build is written to a temporary directory and
renamed into place, so a crash or a bad file leaves no half cache. Reads are memory maps (copy on
write), so the training loop gathers batches from the page cache and a set larger than RAM works.
Why a cache and not decoding per epoch in DataLoader workers: bench/data_throughput.py measures both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kdedge.data.base import ImageData
from kdedge.data.folder_layout import SPLITS, FolderPlan
from kdedge.data.image_files import UnreadableImage, decode_image
from kdedge.errors import KdedgeError

FORMAT_VERSION = 1
META = "meta.json"


@dataclass(frozen=True)
class CachedFolder:
    splits: dict[str, ImageData]
    mean: tuple[float, ...]  # of the train split, on the [0, 1] scale
    std: tuple[float, ...]
    notes: tuple[str, ...]
    directory: Path


def cache_root() -> Path:
    """$KDEDGE_CACHE_DIR, else $XDG_CACHE_HOME/kdedge, else ~/.cache/kdedge."""
    if os.environ.get("KDEDGE_CACHE_DIR"):
        return Path(os.environ["KDEDGE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdedge"


def cache_key(plan: FolderPlan, settings: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": FORMAT_VERSION, "settings": settings, "classes": plan.classes},
                             sort_keys=True).encode())
    for split in SPLITS:
        part = plan.splits[split]
        for path, label in zip(part.files, part.labels):
            stat = path.stat()
            digest.update(f"{split}\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode())
    return digest.hexdigest()[:40]


def load_or_build(plan: FolderPlan, *, size: int, color: str, resize: str, skip_bad: bool) -> CachedFolder:
    settings = {"image_size": size, "color": color, "resize": resize, "bad_files": "skip" if skip_bad else "error"}
    directory = cache_root() / "image_folder" / cache_key(plan, settings)
    meta = _read_meta(directory)
    built = meta is None
    if built:
        meta = _build(plan, directory, size=size, channels=1 if color == "grayscale" else 3, color=color,
                      resize=resize, skip_bad=skip_bad)
    splits = {}
    for split in SPLITS:
        images = np.load(directory / f"{split}.npy", mmap_mode="c")  # "c": writable view, never written back
        labels = np.load(directory / f"{split}_labels.npy")
        splits[split] = ImageData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
    total = sum(len(s) for s in splits.values())
    notes = list(meta["notes"])
    notes.append(f"{'decoded' if built else 'read'} {total} images {'into' if built else 'from'} the image cache "
                 f"{directory} ({meta['bytes'] / 2**20:.1f} MiB; $KDEDGE_CACHE_DIR moves it)")
    return CachedFolder(splits, tuple(meta["mean"]), tuple(meta["std"]), tuple(notes), directory)


def _read_meta(directory: Path) -> dict | None:
    try:
        meta = json.loads((directory / META).read_text())
        if meta.get("version") == FORMAT_VERSION and all((directory / f"{s}.npy").is_file() for s in SPLITS):
            return meta
    except (OSError, ValueError):
        pass
    return None  # absent or damaged: rebuilt


def _build(plan: FolderPlan, directory: Path, *, size: int, channels: int, color: str, resize: str,
           skip_bad: bool) -> dict:
    tmp = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        meta = _decode_all(plan, tmp, size=size, channels=channels, color=color, resize=resize, skip_bad=skip_bad)
        (tmp / META).write_text(json.dumps(meta))
        try:
            os.replace(tmp, directory)
        except OSError:  # another process built the same cache meanwhile: use theirs
            if _read_meta(directory) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _decode_all(plan: FolderPlan, out: Path, *, size: int, channels: int, color: str, resize: str,
                skip_bad: bool) -> dict:
    target = "L" if color == "grayscale" else "RGB"
    converted: Counter[str] = Counter()
    unreadable: list[str] = []
    sums = np.zeros(channels, dtype=np.int64)  # exact integer sums: the statistics need no float care
    squares = np.zeros(channels, dtype=np.int64)
    counts: dict[str, int] = {}
    total = sum(len(plan.splits[s].files) for s in SPLITS)
    with _progress() as progress:
        task = progress.add_task("decoding the image folder", total=total)
        for split in SPLITS:
            part = plan.splits[split]
            array = np.lib.format.open_memmap(out / f"{split}.npy", mode="w+", dtype=np.uint8,
                                              shape=(len(part.files), channels, size, size))
            kept: list[int] = []
            for i, path in enumerate(part.files):
                try:
                    pixels, mode = decode_image(path, size, color=color, resize=resize)
                except UnreadableImage as exc:
                    if not skip_bad:
                        raise KdedgeError(f"{path}: cannot read image ({exc}); replace or delete the file, or set "
                                          "data.bad_files: skip to leave unreadable files out") from None
                    unreadable.append(str(path))
                else:
                    array[len(kept)] = pixels.transpose(2, 0, 1)
                    kept.append(i)
                    if mode != target:
                        converted[mode] += 1
                    if split == "train":
                        wide = pixels.reshape(-1, channels).astype(np.int64)
                        sums += wide.sum(0)
                        squares += (wide * wide).sum(0)
                progress.advance(task)
            array.flush()
            del array
            if len(kept) < len(part.files):
                _truncate(out / f"{split}.npy", len(kept), (channels, size, size))
            np.save(out / f"{split}_labels.npy", np.asarray([part.labels[i] for i in kept], dtype=np.int64))
            counts[split] = len(kept)
    notes = []
    if converted:
        modes = ", ".join(f"{m}: {n}" for m, n in sorted(converted.items()))
        notes.append(f"{plan.root}: converted {sum(converted.values())} images to {target} (from {modes})")
    if unreadable:
        notes.append(f"{plan.root}: skipped {len(unreadable)} unreadable image file(s) (data.bad_files: skip), "
                     f"e.g. {unreadable[0]}")
    pixels_seen = max(counts.get("train", 0), 1) * size * size
    mean = sums / (255.0 * pixels_seen)
    std = np.sqrt(np.maximum(squares / (255.0**2 * pixels_seen) - mean**2, 0.0))
    nbytes = sum(counts.values()) * channels * size * size
    return {"version": FORMAT_VERSION, "counts": counts, "mean": mean.tolist(), "std": std.tolist(),
            "notes": notes, "bytes": nbytes}


def _truncate(path: Path, n: int, shape: tuple[int, ...]) -> None:
    """Rewrite an .npy keeping its first n rows (rows of skipped files were never filled), in chunks."""
    source = np.load(path, mmap_mode="r")
    smaller = path.with_suffix(".part.npy")
    target = np.lib.format.open_memmap(smaller, mode="w+", dtype=np.uint8, shape=(n, *shape))
    step = max(1, 2**26 // max(1, int(np.prod(shape))))
    for start in range(0, n, step):
        target[start:start + step] = source[start:min(start + step, n)]
    target.flush()
    del target, source
    os.replace(smaller, path)


def _progress() -> Progress:
    return Progress(TextColumn("[bold cyan]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)
