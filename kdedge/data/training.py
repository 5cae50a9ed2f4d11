"""TrainingData: the train, validation and test splits a model is trained and evaluated on, with the
input statistics that normalise them. Plain data, shared by the training loop and the stages."""

from __future__ import annotations

from dataclasses import dataclass

from kdedge.data.base import ImageData
from kdedge.inputs import InputStats


@dataclass(frozen=True)
class TrainingData:
    train: ImageData
    val: ImageData
    test: ImageData
    stats: InputStats
    hflip_ok: bool              # the dataset allows horizontal flips as augmentation
    train_transform: str = "pad_crop"  # or "random_resized_crop" (image folders); see kdedge/data/transforms.py
    min_crop_scale: float = 1.0  # area scale lower bound of random_resized_crop
