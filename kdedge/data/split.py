"""Deterministic stratified splitting: on labels alone (so an image folder decides its splits before
decoding a file) and of an in-memory image set."""

from __future__ import annotations

import torch

from kdedge.data.base import ImageData


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) sample indices, both in ascending order: per class, round(n * fraction) samples are
    held out, but at least one on each side when the class has two or more, so no class silently
    disappears from either part. Same labels and seed, same split."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(int(seed))
    labels = torch.as_tensor(labels).cpu()
    held = torch.zeros(len(labels), dtype=torch.bool)
    for cls in torch.unique(labels, sorted=True).tolist():
        members = torch.nonzero(labels == cls).flatten()
        n = len(members)
        n_held = min(max(round(n * fraction), 1 if n >= 2 else 0), max(n - 1, 0))
        held[members[torch.randperm(n, generator=generator)[:n_held]]] = True
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


def split_train_val(data: ImageData, val_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Split per class so both parts keep the class proportions (see `stratified_split`); both parts
    keep the original sample order."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_index, val_index = stratified_split(data.labels, val_fraction, seed)
    return data.subset(train_index), data.subset(val_index)


def split_record(layout: str, train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, num_classes: int, *,
                 how: dict[str, str], **settings: float | int) -> dict:
    """How a dataset was cut, for the manifest: layout, fractions and seed, counts per split and class."""
    parts = {"train": train, "val": val, "test": test}
    return {
        "layout": layout, **settings, "how": {k: how[k] for k in parts},
        "counts": {name: int(len(labels)) for name, labels in parts.items()},
        "per_class": {name: torch.bincount(torch.as_tensor(labels, dtype=torch.int64).cpu(),
                                           minlength=num_classes).tolist() for name, labels in parts.items()},
    }
