"""Which images calibrate INT8 activation ranges: a small, class-balanced, seeded subset of the training split.

The one draw behind QAT (modelopt calibration) and export (ORT / TensorRT INT8 calibration), so both
see the same images for the same (labels, count, seed). Not to be confused with temperature scaling
(kdedge/temperature.py).
"""

from __future__ import annotations

import torch

from kdedge.data.base import ImageData


def int8_calibration_images(train: ImageData, count: int, seed: int) -> torch.Tensor:
    """The uint8 images [count, C, H, W] that calibrate INT8 ranges (see calibration_indices); each
    consumer normalises them as its runtime does."""
    return train.images[calibration_indices(train.labels, count, seed)]


def calibration_indices(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Indices (sorted, int64) of `count` images, as evenly spread over the classes as they allow.

    Every class gets count // K; a class with fewer images gives all it has and the rest is shared out
    again among the others; the last few that do not divide evenly go one each to the lowest class
    labels. Within a class the images are a seeded random draw. `count` is capped at len(labels).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    labels = labels.cpu().flatten()
    count = min(count, len(labels))
    if count == 0:
        return torch.empty(0, dtype=torch.int64)
    classes, sizes = torch.unique(labels, sorted=True, return_counts=True)
    sizes = sizes.tolist()
    quota = [0] * len(sizes)
    remaining = count
    while remaining > 0:  # water-filling: terminates because count <= sum(sizes)
        open_ = [i for i, n in enumerate(sizes) if quota[i] < n]
        share = remaining // len(open_)
        if share == 0:
            for i in open_[:remaining]:
                quota[i] += 1
            break
        for i in open_:
            take = min(share, sizes[i] - quota[i])
            quota[i] += take
            remaining -= take
    generator = torch.Generator().manual_seed(int(seed))
    chosen = []
    for cls, k in zip(classes.tolist(), quota):
        members = torch.nonzero(labels == cls).flatten()
        # a draw for every class, even k == 0, so one class's quota does not shift the others' draws
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values
