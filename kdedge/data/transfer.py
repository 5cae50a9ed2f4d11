"""Transfer sets for distillation (seeds 001, 002): the training split, a reduced one, an unlabeled one."""

from __future__ import annotations

import torch

from kdedge.data.base import ImageData


def reduce_per_class(data: ImageData, per_class: int, seed: int) -> ImageData:
    """Keep `per_class` images of every class, drawn with a seeded generator; original order kept.

    Raises ValueError naming the smallest class when a class has fewer images than asked for.
    """
    counts = torch.bincount(data.labels)
    present = counts.nonzero().flatten()
    smallest = int(counts[present].min())
    if per_class > smallest:
        cls = int(present[counts[present].argmin()])
        raise ValueError(f"class {cls} has only {smallest} training images, fewer than per_class={per_class}")
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for cls in present.tolist():
        members = (data.labels == cls).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    index = torch.cat(keep).sort().values
    return data.subset(index)


def with_labels(data: ImageData, labels: torch.Tensor) -> ImageData:
    """The same images with other labels (e.g. a teacher's pseudo-labels on an unlabeled set)."""
    if labels.shape != data.labels.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match {tuple(data.labels.shape)}")
    return ImageData(images=data.images, labels=labels.to(torch.int64))
