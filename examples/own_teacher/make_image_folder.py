"""Write the Fashion-MNIST subset embedded in kdedge as an image folder of RGB photos, the way a user's
own data usually arrives: root/train/<class>/*.png and root/test/<class>/*.png, 3 channels, 64x64.

    python examples/own_teacher/make_image_folder.py data/fmnist64 --train-per-class 400 --test-per-class 100

Class folders are named `<label>_<name>` (0_t-shirt_top ... 9_ankle_boot), so their sorted order is the
label order: an image-folder loader that numbers classes by sorted folder name (torchvision's
ImageFolder, kdedge's image_folder) gives every image its Fashion-MNIST label.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from PIL import Image

from kdedge.data.fashion_mnist import CLASSES
from kdedge.data.fashion_mnist_small import fashion_mnist_small


def class_folders() -> list[str]:
    """Folder names in label order; a single-digit prefix keeps sorted(names) == label order."""
    assert len(CLASSES) <= 10, "one-digit prefixes sort correctly only up to 10 classes"
    names = [f"{i}_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}" for i, name in enumerate(CLASSES)]
    assert names == sorted(names)
    return names


def first_per_class(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Indices of the first `per_class` images of every class, in file order (all when None)."""
    keep = []
    for label in range(len(CLASSES)):
        found = np.flatnonzero(labels == label)
        if per_class is not None and len(found) < per_class:
            raise SystemExit(f"only {len(found)} images of class {label} in this split; ask for at most that many")
        keep.append(found if per_class is None else found[:per_class])
    return np.sort(np.concatenate(keep))


def to_rgb_png(gray: np.ndarray, size: int) -> Image.Image:
    """28x28 grey -> size x size RGB: bilinear upscale (what a camera photo of the item would look like
    blown up), the grey value copied into all three channels."""
    return Image.fromarray(gray).resize((size, size), Image.BILINEAR).convert("RGB")


def write_folder(root: Path, *, train_per_class: int | None = None, test_per_class: int | None = None,
                 size: int = 64) -> dict[str, int]:
    """Write both splits under `root`; returns how many images each split got."""
    splits = fashion_mnist_small([])
    folders = class_folders()
    counts = {}
    for split, data, per_class in (("train", splits.train, train_per_class), ("test", splits.test, test_per_class)):
        images = data.images[:, 0].numpy()  # [N, 28, 28] uint8
        labels = data.labels.numpy()
        chosen = first_per_class(labels, per_class)
        for folder in folders:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for index in chosen:
            path = root / split / folders[labels[index]] / f"{index:05d}.png"
            to_rgb_png(images[index], size).save(path, format="PNG")
        counts[split] = len(chosen)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder to write train/ and test/ into")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="images per class in train/ (at most 400; default all)")
    parser.add_argument("--test-per-class", type=int, default=None,
                        help="images per class in test/ (at most 100; default all)")
    parser.add_argument("--size", type=int, default=64, help="side of the square RGB images (default 64)")
    args = parser.parse_args(argv)
    if (args.root / "train").exists() or (args.root / "test").exists():
        raise SystemExit(f"{args.root} already holds train/ or test/; pick an empty folder")
    counts = write_folder(args.root, train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                          size=args.size)
    print(f"wrote {counts['train']} train and {counts['test']} test images ({args.size}x{args.size} RGB PNG) "
          f"in {len(CLASSES)} class folders under {args.root}")


if __name__ == "__main__":
    main()
