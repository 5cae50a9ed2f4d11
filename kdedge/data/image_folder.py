"""Class-per-folder image datasets at real sizes: root/train + root/test (+ root/val), root/train + root/val,
or a flat root/<class>/ split seeded and stratified. The splits are decided from the file list before
decoding; each split is decoded once into the on-disk cache (kdedge/data/image_cache.py) and read back
as a memory map. Training crops with RandomResizedCrop + flip; evaluation uses the cached image
(short side resized to image_size, centre crop)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Sequence

from pydantic import Field

from kdedge.data.base import DATASETS, DatasetSplits
from kdedge.data.folder_layout import SPLITS, FolderPlan, plan_folder
from kdedge.data.image_cache import load_or_build
from kdedge.data.split import split_record
from kdedge.errors import KdedgeError

PositiveFloat = Annotated[float, Field(gt=0)]


@DATASETS.register("image_folder")
def image_folder(
    roots: Sequence[Path],
    image_size: Annotated[int, Field(ge=4, le=1024, description="training and evaluation resolution (square)")] = 32,
    color: Annotated[Literal["rgb", "grayscale"], Field(description="3 channels, or 1 (grayscale)")] = "rgb",
    resize: Annotated[Literal["crop", "squash"], Field(description="crop: short side to image_size + centre "
                                                                   "crop (keeps the aspect); squash")] = "crop",
    mean: Annotated[Optional[list[Annotated[float, Field(ge=0, le=1)]]],
                    Field(description="per-channel mean on [0,1] (e.g. your teacher's); else computed on train")] = None,
    std: Annotated[Optional[list[PositiveFloat]], Field(description="per-channel std, with mean")] = None,
    orientation_dependent: Annotated[bool, Field(description="labels change under a horizontal flip "
                                                             "(signs, digits): no flips in training")] = False,
    min_crop_scale: Annotated[float, Field(gt=0, le=1, description="RandomResizedCrop's smallest area share")] = 0.35,
    test_fraction: Annotated[Optional[Annotated[float, Field(gt=0, lt=1)]],
                             Field(description="share of each class held out as test (one-folder layouts)")] = None,
    bad_files: Annotated[Literal["error", "skip"], Field(description="error: stop on an unreadable image; skip: "
                                                                     "leave it out, with a count")] = "error",
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> DatasetSplits:
    channels = 1 if color == "grayscale" else 3
    _check_stats(mean, std, channels, color)
    skip = bad_files == "skip"
    plan = plan_folder(roots, val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed, skip_bad=skip)
    _check_nonempty(plan, after_decoding=False)
    cached = load_or_build(plan, size=image_size, color=color, resize=resize, skip_bad=skip)
    labels = {name: part.labels for name, part in cached.splits.items()}
    _check_nonempty(plan, after_decoding=True, labels={k: v.tolist() for k, v in labels.items()})
    given = mean is not None
    record = split_record(plan.layout, labels["train"], labels["val"], labels["test"], len(plan.classes),
                          how=plan.how, **plan.settings)
    record["mean_std"] = "given in the recipe" if given else "computed on the train split"
    notes = plan.notes + list(cached.notes)
    computed_std = cached.std
    if not given and min(cached.std) < 1e-6:  # a constant channel: dividing by 0 would make every input inf
        computed_std = tuple(s if s >= 1e-6 else 1.0 for s in cached.std)
        notes.append(f"{plan.root}: a colour channel is constant over the train split; its std is set to 1")
    if not given:
        notes.append(f"{plan.root}: mean {_fmt(cached.mean)}, std {_fmt(computed_std)} computed on the train split "
                     "(set data.mean and data.std to fix them)")
    return DatasetSplits(
        "image_folder", cached.splits["train"], cached.splits["test"], plan.classes,
        tuple(mean) if given else cached.mean, tuple(std) if given else computed_std,  # type: ignore[arg-type]
        hflip_ok=not orientation_dependent, source=str(plan.root), val=cached.splits["val"],
        train_transform="random_resized_crop", min_crop_scale=min_crop_scale, notes=tuple(notes), split=record)


def _check_stats(mean, std, channels: int, color: str) -> None:
    if (mean is None) != (std is None):
        raise KdedgeError(f"data.{'std' if mean is not None else 'mean'}: missing; give both data.mean and data.std "
                          "(one value per channel) or neither (then they are computed on the train split)")
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise KdedgeError(f"data.{name}: has {len(values)} value(s) but color: {color} images have {channels} "
                              f"channel(s); give {channels} value(s)")


def _check_nonempty(plan: FolderPlan, *, after_decoding: bool, labels: dict | None = None) -> None:
    """Every split has images and train and test have every class (val may lack a rare class)."""
    for split in SPLITS:
        found = labels[split] if labels is not None else list(plan.splits[split].labels)
        source = plan.how[split]
        if not found:
            cause = "every image of it was unreadable (bad_files: skip)" if after_decoding else "no images"
            fix = ("add images or raise data.val_fraction" if split == "val" else "add images")
            raise KdedgeError(f"{plan.root}: the {split} split ({source}) is empty: {cause}; {fix}")
        if split == "val":
            continue
        missing = sorted(set(range(len(plan.classes))) - set(found))
        if missing:
            name = plan.classes[missing[0]]
            raise KdedgeError(f"{plan.root}: class {name!r} has no readable image in the {split} split ({source}); "
                              "add images of it or remove the class folder")


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"
