"""A run's data: load the recipe's dataset, cut the deterministic train/validation split (unless the
loader cut it, as image folders do before decoding), record how, and refuse to continue a run on data
other than the data it was made with. Light (no training code): the bench
reads its test split through here too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdedge.data import DatasetSplits, load_dataset, split_train_val
from kdedge.data.split import split_record
from kdedge.data.training import TrainingData
from kdedge.errors import KdedgeError
from kdedge.inputs import InputStats
from kdedge.recipe import DataConfig, Recipe


_PIPELINE_SPLIT = {"train": "train", "val": "drawn from train (stratified)", "test": "test"}


@dataclass(frozen=True)
class PreparedData:
    dataset: DatasetSplits
    training: TrainingData
    _val_fraction: float = 0.1
    _split_seed: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.dataset.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def notes(self) -> tuple[str, ...]:
        """One line each for the user: converted image modes, skipped files, where the cache is, ..."""
        return self.dataset.notes

    def describe(self) -> dict:
        return {
            "dataset": self.dataset.name, "source": self.dataset.source,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "classes": list(self.dataset.classes), "mean": list(self.dataset.mean), "std": list(self.dataset.std),
            "n_train": len(self.training.train), "n_val": len(self.training.val), "n_test": len(self.training.test),
            "split": self.split,
        }

    @property
    def split(self) -> dict:
        """How train/val/test were cut (the loader's record, else the pipeline's stratified split)."""
        if self.dataset.split is not None:
            return self.dataset.split
        t = self.training
        return split_record("train and test as the dataset ships them; val drawn from train", t.train.labels,
                            t.val.labels, t.test.labels, self.num_classes, how=_PIPELINE_SPLIT,
                            val_fraction=self._val_fraction, split_seed=self._split_seed)


def prepare_data(recipe: Recipe, extra_roots: tuple[Path, ...] = ()) -> PreparedData:
    return load_data(recipe.data, extra_roots)


def load_data(config: DataConfig, extra_roots: tuple[Path, ...] = ()) -> PreparedData:
    roots = ([config.root] if config.root else []) + list(extra_roots)
    dataset = load_dataset(config.dataset, roots, val_fraction=config.val_fraction, split_seed=config.split_seed,
                           **config.options)
    if dataset.val is not None:
        train, val = dataset.train, dataset.val
    else:
        train, val = split_train_val(dataset.train, config.val_fraction, config.split_seed)
    training = TrainingData(train=train, val=val, test=dataset.test,
                            stats=InputStats(tuple(dataset.mean), tuple(dataset.std)), hflip_ok=dataset.hflip_ok,
                            train_transform=dataset.train_transform, min_crop_scale=dataset.min_crop_scale)
    return PreparedData(dataset=dataset, training=training, _val_fraction=config.val_fraction,
                        _split_seed=config.split_seed)


def recorded_data(manifest: dict[str, Any], manifest_path: Path, extra_roots: tuple[Path, ...] = ()) -> PreparedData:
    """The data a run was made with, from the data: section of the recipe in its manifest alone, refused
    if it changed. Only that section is read (it was checked when the run was made), so a bench loads
    no model, loss or training code to validate the rest of the recipe."""
    try:
        config = DataConfig.model_validate(manifest["recipe"]["data"])
    except (KeyError, TypeError, ValidationError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else f"missing {exc}"
        raise KdedgeError(f"{manifest_path}: recipe.data: {reason}; the manifest is damaged, rerun the "
                          "recipe with --force") from None
    data = load_data(config, extra_roots)
    check_same_data(manifest.get("data"), data, manifest_path)
    return data


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
