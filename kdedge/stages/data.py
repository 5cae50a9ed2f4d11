"""Load a recipe's dataset and cut the deterministic train/validation split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdedge.data import DatasetSplits, load_dataset, split_train_val
from kdedge.errors import KdedgeError
from kdedge.recipe import Recipe
from kdedge.train import TrainingData
from kdedge.train.batches import InputStats


@dataclass(frozen=True)
class PreparedData:
    dataset: DatasetSplits
    training: TrainingData

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.dataset.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    def describe(self) -> dict:
        return {
            "dataset": self.dataset.name, "source": self.dataset.source,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "classes": list(self.dataset.classes), "mean": list(self.dataset.mean), "std": list(self.dataset.std),
            "n_train": len(self.training.train), "n_val": len(self.training.val), "n_test": len(self.training.test),
        }


def prepare_data(recipe: Recipe, extra_roots: tuple[Path, ...] = ()) -> PreparedData:
    roots = ([recipe.data.root] if recipe.data.root else []) + list(extra_roots)
    dataset = load_dataset(recipe.data.dataset, roots, **recipe.data.options)
    train, val = split_train_val(dataset.train, recipe.data.val_fraction, recipe.data.split_seed)
    training = TrainingData(train=train, val=val, test=dataset.test,
                            stats=InputStats(tuple(dataset.mean), tuple(dataset.std)), hflip_ok=dataset.hflip_ok)
    return PreparedData(dataset=dataset, training=training)


def check_same_data(recorded: dict | None, data: PreparedData, manifest_path: Path) -> None:
    """Refuse to continue a run on data other than the data it was made with (stages never guess)."""
    if not recorded:
        return
    found = data.describe()
    for key, value in found.items():
        if key in recorded and recorded[key] != value:
            raise KdedgeError(
                f"{manifest_path}: data.{key} was {recorded[key]!r} when this run was made, but the data found "
                f"now has {value!r}; point data.root / $KDEDGE_DATA at the data the run was trained on")
