"""Deterministic stratified splitting of an in-memory image set."""

from __future__ import annotations

import torch

from kdedge.data.base import ImageData


def split_train_val(data: ImageData, val_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Split per class so both parts keep the class proportions; same seed, same split.

    Each class gives round(n * val_fraction) samples to val, but at least one to each side
    when it has two or more, so no class silently disappears from either part.
    Both parts keep the original sample order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(int(seed))
    labels = data.labels.cpu()
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    for cls in torch.unique(labels, sorted=True).tolist():
        members = torch.nonzero(labels == cls).flatten()
        n = len(members)
        n_val = min(max(round(n * val_fraction), 1 if n >= 2 else 0), max(n - 1, 0))
        chosen = members[torch.randperm(n, generator=generator)[:n_val]]
        is_val[chosen] = True
    val_index = torch.nonzero(is_val).flatten()
    train_index = torch.nonzero(~is_val).flatten()
    return data.subset(train_index), data.subset(val_index)
