"""Which files of an image folder are train, val and test, decided from the file list and labels alone
(before any image is decoded). Layouts: root/train + root/test (+ root/val), root/train + root/val,
root/train alone, and a flat root/<class>/; what is split is seeded and stratified per class."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from kdedge.data.image_files import image_extensions
from kdedge.data.split import stratified_split
from kdedge.errors import KdedgeError

LAYOUT = "root/train/<class>/* and root/test/<class>/* (or root/val/...), or a flat root/<class>/*"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFiles:
    files: tuple[Path, ...]
    labels: tuple[int, ...]


@dataclass
class FolderPlan:
    root: Path
    layout: str  # "train+test", "train+val+test", "train+val", "train", "flat"
    classes: tuple[str, ...]
    splits: dict[str, SplitFiles]
    how: dict[str, str]  # per split: where it came from, for the manifest
    settings: dict[str, float | int]  # the fractions and seed that cut what was split
    notes: list[str] = field(default_factory=list)
    empty_files: list[Path] = field(default_factory=list)  # 0-byte files left out (bad_files: skip)


def plan_folder(roots: Sequence[Path], *, val_fraction: float, test_fraction: float | None, seed: int,
                skip_bad: bool) -> FolderPlan:
    root = _find_root(roots)
    has = {name: (root / name).is_dir() for name in SPLITS}
    fraction = 0.2 if test_fraction is None else test_fraction
    if not has["train"]:
        return _split_flat(root, root, "flat", val_fraction, fraction, seed, skip_bad)
    if not has["val"] and not has["test"]:
        plan = _split_flat(root, root / "train", "train", val_fraction, fraction, seed, skip_bad)
        plan.notes.append(f"{root}: no test/ or val/ folder: test and validation images are drawn from train/ "
                          f"(test_fraction {fraction}, val_fraction {val_fraction}, seed {seed})")
        return plan
    notes = [f"data.test_fraction is ignored: {root} has its own test/ or val/ folder"] if test_fraction else []
    lister = _Lister(skip_bad)
    classes = _class_dirs(root / "train")
    train = lister.split(root / "train", classes)
    if has["test"]:
        test = lister.split(root / "test", _matching(root / "test", root / "train", classes))
    else:
        test = lister.split(root / "val", _matching(root / "val", root / "train", classes))
    if has["val"] and has["test"]:
        val = lister.split(root / "val", _matching(root / "val", root / "train", classes))
        how = {"train": "train/", "val": "val/", "test": "test/"}
    else:
        kept, held = stratified_split(torch.tensor(train.labels, dtype=torch.int64), val_fraction, seed)
        train, val = _pick(train, kept), _pick(train, held)
        how = {"train": "train/", "val": f"drawn from train/ (val_fraction {val_fraction}, seed {seed})",
               "test": "test/" if has["test"] else "val/"}
    layout = "+".join(name for name in SPLITS if has[name])
    if not has["test"]:
        notes.append(f"{root}: no test/ folder: val/ is used as the test split and validation images are "
                       f"drawn from train/ (val_fraction {val_fraction}, seed {seed})")
    settings = {} if has["val"] and has["test"] else {"val_fraction": val_fraction, "split_seed": seed}
    return FolderPlan(root, layout, tuple(classes), {"train": train, "val": val, "test": test}, how, settings,
                      notes=notes + lister.notes(root), empty_files=lister.empty)


def _find_root(roots: Sequence[Path]) -> Path:
    for root in map(Path, roots):
        if (root / "train").is_dir():
            return root
        for name in ("val", "test"):
            if (root / name).is_dir():
                raise KdedgeError(f"{root}: has a {name}/ folder but no train/ folder; add train/<class>/ "
                                  f"folders (layout: {LAYOUT})")
        if root.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
            return root
    searched = ", ".join(str(r) for r in roots) or "(no directories given)"
    raise KdedgeError(f"image folder dataset not found: no train/ folder or class folders in {searched}; "
                      f"lay the images out as {LAYOUT} and set the recipe's data.root (or $KDEDGE_DATA) to that root")


def _split_flat(root: Path, class_root: Path, layout: str, val_fraction: float, test_fraction: float,
                seed: int, skip_bad: bool) -> FolderPlan:
    lister = _Lister(skip_bad)
    classes = _class_dirs(class_root)
    everything = lister.split(class_root, classes)
    counts = Counter(everything.labels)
    few = [name for i, name in enumerate(classes) if counts[i] < 2]
    if few:
        raise KdedgeError(f"{class_root / few[0]}: one image is too few to split into train and test; add "
                          "images (at least 2 per class, better dozens)")
    rest, test = stratified_split(torch.tensor(everything.labels, dtype=torch.int64), test_fraction, seed)
    remaining = _pick(everything, rest)
    kept, held = stratified_split(torch.tensor(remaining.labels, dtype=torch.int64), val_fraction, seed)
    where = "root" if layout == "flat" else "train/"
    how = {"train": f"drawn from {where}", "val": f"drawn from {where} (val_fraction {val_fraction}, seed {seed})",
           "test": f"drawn from {where} (test_fraction {test_fraction}, seed {seed})"}
    splits = {"train": _pick(remaining, kept), "val": _pick(remaining, held), "test": _pick(everything, test)}
    settings = {"val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": seed}
    return FolderPlan(root, layout, tuple(classes), splits, how, settings, notes=lister.notes(root),
                      empty_files=lister.empty)


def _pick(split: SplitFiles, index: torch.Tensor) -> SplitFiles:
    chosen = index.tolist()
    return SplitFiles(tuple(split.files[i] for i in chosen), tuple(split.labels[i] for i in chosen))


def _class_dirs(split_dir: Path) -> list[str]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise KdedgeError(f"{split_dir}: no class folders found; lay the images out as {LAYOUT}")
    return classes


def _matching(split_dir: Path, train_dir: Path, classes: list[str]) -> list[str]:
    """The class folders of val/ or test/, which must be exactly those of train/."""
    found = _class_dirs(split_dir)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise KdedgeError(f"{split_dir}: class folder(s) {', '.join(unknown)} do not exist under {train_dir}; "
                          f"rename or remove them so the classes match train/")
    missing = [name for name in classes if name not in found]
    if missing:
        raise KdedgeError(f"{split_dir}: no folder for class(es) {', '.join(missing[:5])} that {train_dir} has; "
                          f"add {split_dir.name} images for them or remove them from train/")
    return classes


class _Lister:
    """Lists the image files of class folders, counting what it leaves out."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.skipped: Counter[str] = Counter()
        self.empty: list[Path] = []

    def split(self, split_dir: Path, classes: list[str]) -> SplitFiles:
        files: list[Path] = []
        labels: list[int] = []
        for index, name in enumerate(classes):
            found = self._images(split_dir / name)
            files += found
            labels += [index] * len(found)
        return SplitFiles(tuple(files), tuple(labels))

    def _images(self, folder: Path) -> list[Path]:
        extensions = image_extensions()
        found: list[Path] = []
        others: Counter[str] = Counter()
        for directory, subdirs, names in os.walk(folder):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(directory) / name
                kind = name if name.startswith(".") or "." not in name else Path(name).suffix.lower()
                if name.startswith(".") or kind not in extensions:
                    others[kind] += 1
                elif path.stat().st_size == 0:
                    if not self.skip_bad:
                        raise KdedgeError(f"{path}: image file is empty (0 bytes); replace or delete it, or set "
                                          "data.bad_files: skip to leave unreadable files out")
                    self.empty.append(path)
                else:
                    found.append(path)
        self.skipped.update(others)
        if not found:
            held = f" (it holds only {sum(others.values())} non-image file(s): {_kinds(others)})" if others else ""
            raise KdedgeError(f"{folder}: class folder has no images{held}; add images (any format Pillow "
                              "reads: .png, .jpg, .bmp, .webp, .tif, .gif, ...) or remove the folder")
        return found

    def notes(self, root: Path) -> list[str]:
        notes = []
        if self.skipped:
            notes.append(f"{root}: skipped {sum(self.skipped.values())} file(s) that are not images by extension "
                         f"({_kinds(self.skipped)})")
        if self.empty:
            notes.append(f"{root}: skipped {len(self.empty)} empty (0-byte) image file(s) (data.bad_files: skip), "
                         f"e.g. {self.empty[0]}")
        return notes


def _kinds(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} x{n}" for kind, n in counts.most_common(5)) + (" ..." if len(counts) > 5 else "")
