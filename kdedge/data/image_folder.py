"""Class-per-folder image datasets (GTSRB style): root/train/<class>/*.png and root/test/<class>/*."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from kdedge.data.base import DATASETS, DatasetSplits, ImageData, channel_stats
from kdedge.errors import KdedgeError

SUFFIXES = {".png", ".ppm", ".jpg", ".jpeg"}
# every image is shrunk to at most 1024x1024; 40 MP (a large camera photo, ~120 MB decoded) is plenty
MAX_PIXELS = 40_000_000
LAYOUT = "root/train/<class>/*.png|ppm|jpg and root/test/<class>/..."


@DATASETS.register("image_folder")
def image_folder(roots: Sequence[Path], image_size: Annotated[int, Field(ge=4, le=1024)] = 32) -> DatasetSplits:
    if image_size < 1:
        raise KdedgeError(f"image_folder option image_size={image_size} must be >= 1; fix it in the recipe")
    root = next((Path(r) for r in roots if (Path(r) / "train").is_dir()), None)
    if root is None:
        searched = ", ".join(str(Path(r) / "train") for r in roots) or "(no directories given)"
        raise KdedgeError(
            f"image folder dataset not found: no train/ folder in {searched}; lay the images out as "
            f"{LAYOUT} and set the recipe's data.root (or $KDEDGE_DATA) to that root"
        )
    classes = _class_dirs(root / "train")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise KdedgeError(f"{test_dir}: missing test/ folder; add test images laid out as {LAYOUT}")
    unknown = sorted(set(_class_dirs(test_dir)) - set(classes))
    if unknown:
        raise KdedgeError(
            f"{test_dir}: class folder(s) {', '.join(unknown)} do not exist under {root / 'train'}; "
            f"rename or remove them so test classes match train classes"
        )
    train = _read_split(root / "train", classes, image_size, require_all=True)
    test = _read_split(test_dir, classes, image_size, require_all=False)
    mean, std = channel_stats(train.images)
    # hflip_ok False: the typical use (traffic signs) has left/right-specific classes
    return DatasetSplits("image_folder", train, test, tuple(classes), mean, std, hflip_ok=False, source=str(root))


def _class_dirs(split_dir: Path) -> list[str]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise KdedgeError(f"{split_dir}: no class folders found; lay the images out as {LAYOUT}")
    return classes


def _read_split(split_dir: Path, classes: list[str], size: int, require_all: bool) -> ImageData:
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        folder = split_dir / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
        if not files and require_all:
            raise KdedgeError(f"{folder}: class folder has no .png/.ppm/.jpg images; add images or remove the folder")
        for path in files:
            images.append(_read_image(path, size))
            labels.append(index)
    if not images:
        raise KdedgeError(f"{split_dir}: no .png/.ppm/.jpg images in any class folder; add images as {LAYOUT}")
    stacked = np.stack(images).transpose(0, 3, 1, 2)  # HWC -> CHW
    return ImageData(torch.from_numpy(np.ascontiguousarray(stacked)), torch.tensor(labels, dtype=torch.int64))


def _read_image(path: Path, size: int) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError  # imported here: only this loader needs Pillow
    except ImportError:
        raise KdedgeError("dataset 'image_folder' needs Pillow, which is not installed; pip install pillow") from None
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, past its own limit; any image over ours is refused below anyway
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only: the size is known before decoding
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise KdedgeError(f"{path}: image is {width}x{height} pixels, over the {MAX_PIXELS:,} pixel "
                                      "limit (a decompression bomb, or far larger than a training image); "
                                      "shrink or delete the file")
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise KdedgeError(f"{path}: cannot read image ({exc}); replace or delete the file") from None
