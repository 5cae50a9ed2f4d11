"""image_folder layouts and splits (decided before decoding, recorded in the manifest) and its on-disk
memory-mapped cache (reused, invalidated when a file changes, never half-written)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdedge.data import load_dataset
from kdedge.errors import KdedgeError
from tests.unit.test_image_folder import tree


def ids(part) -> list[tuple[int, int]]:
    """(label, image number) of each image: tree() paints image i of class c as (c*60, i*9, 200)."""
    return [(int(l), int(img[1, 0, 0]) // 9) for img, l in zip(part.images, part.labels)]


def test_train_val_test_folders_are_used_as_they_are(tmp_path):
    root = tree(tmp_path, {"train": {"a": 3, "b": 2}, "val": {"a": 2, "b": 1}, "test": {"a": 1, "b": 4}})
    d = load_dataset("image_folder", [root], image_size=4)
    assert (len(d.train), len(d.val), len(d.test)) == (5, 3, 5)
    assert ids(d.val) == [(0, 0), (0, 1), (1, 0)] and d.split["layout"] == "train+val+test"
    assert d.split["per_class"] == {"train": [3, 2], "val": [2, 1], "test": [1, 4]}


def test_train_and_val_without_test_val_becomes_test_and_says_so(tmp_path):
    root = tree(tmp_path, {"train": {"a": 10, "b": 10}, "val": {"a": 3, "b": 2}})
    d = load_dataset("image_folder", [root], image_size=4, val_fraction=0.2, split_seed=1)
    assert ids(d.test) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert d.split["per_class"]["val"] == [2, 2] and d.split["how"]["test"] == "val/"
    assert any("val/ is used as the test split" in n for n in d.notes)


@pytest.mark.parametrize("layout", ["flat", "train"])
def test_one_folder_is_split_seeded_stratified_disjoint_and_complete(tmp_path, layout):
    spec = {"a": 20, "b": 10, "c": 5}
    root = tree(tmp_path, {"" if layout == "flat" else "train": spec})
    d = load_dataset("image_folder", [root], image_size=4, val_fraction=0.25, test_fraction=0.2, split_seed=3)
    assert d.split["per_class"]["test"] == [4, 2, 1]  # round(n * 0.2)
    assert d.split["per_class"]["val"] == [4, 2, 1]   # round(rest * 0.25)
    everything = ids(d.train) + ids(d.val) + ids(d.test)
    assert sorted(everything) == sorted((c, i) for c, n in enumerate(spec.values()) for i in range(n))
    same = load_dataset("image_folder", [root], image_size=4, val_fraction=0.25, test_fraction=0.2, split_seed=3)
    other = load_dataset("image_folder", [root], image_size=4, val_fraction=0.25, test_fraction=0.2, split_seed=4)
    assert ids(same.test) == ids(d.test) and ids(same.val) == ids(d.val) and ids(other.test) != ids(d.test)
    assert d.split["layout"] == layout and d.split["test_fraction"] == 0.2 and d.split["split_seed"] == 3


def test_split_is_in_the_manifest_and_old_runs_without_it_still_match(tmp_path):
    from kdedge.recipe import DataConfig
    from kdedge.stages.data import check_same_data, load_data

    root = tree(tmp_path, {"train": {"a": 6, "b": 6}, "test": {"a": 1, "b": 1}})
    config = DataConfig.model_validate({"dataset": "image_folder", "root": str(root), "image_size": 4,
                                        "val_fraction": 0.25, "split_seed": 2, "mean": [0.5] * 3, "std": [0.5] * 3})
    data = load_data(config)
    described = json.loads(json.dumps(data.describe()))  # as the manifest stores it
    assert described["split"]["counts"] == {"train": 8, "val": 4, "test": 2} and described["n_val"] == 4
    assert data.training.train_transform == "random_resized_crop" and data.training.hflip_ok
    assert data.notes == data.dataset.notes and data.notes
    check_same_data(described, data, tmp_path / "manifest.json")
    check_same_data({k: v for k, v in described.items() if k != "split"}, data, tmp_path / "manifest.json")
    moved = load_data(config.model_copy(update={"split_seed": 5}))
    with pytest.raises(KdedgeError, match="data.split was"):
        check_same_data(described, moved, tmp_path / "manifest.json")
    digits = load_data(DataConfig.model_validate({"dataset": "digits"}))  # in-memory sets record theirs too
    assert digits.describe()["split"]["counts"]["val"] == len(digits.training.val)


def test_cache_is_reused_without_decoding_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    import kdedge.data.image_cache as cache

    root = tree(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    first = load_dataset("image_folder", [root], image_size=4)
    real = cache.decode_image

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "decode_image", refuse)
    again = load_dataset("image_folder", [root], image_size=4)
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.images, first.test.images)
    assert any(n.startswith("read 7 images from the image cache") for n in again.notes)
    changed = root / "test" / "a" / "000.png"
    Image.new("RGB", (10, 6), (7, 8, 9)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new size and mtime whatever the clock resolution
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("image_folder", [root], image_size=4)
    monkeypatch.setattr(cache, "decode_image", real)
    rebuilt = load_dataset("image_folder", [root], image_size=4)
    assert rebuilt.test.images[0, :, 0, 0].tolist() == [7, 8, 9]


def test_images_are_a_memory_map_of_the_cache_not_a_copy(tmp_path):
    root = tree(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    d = load_dataset("image_folder", [root], image_size=4)
    cache_dir = os.environ["KDEDGE_CACHE_DIR"]
    maps = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith(cache_dir) and fields[5].endswith("train.npy"):
            start, end = (int(v, 16) for v in fields[0].split("-"))
            maps.append((start, end))
    pointer = d.train.images.data_ptr()
    assert any(start <= pointer < end for start, end in maps), "train images are not mapped from the cache file"


def test_a_failed_build_leaves_no_cache_behind(tmp_path):
    root = tree(tmp_path / "data", {"train": {"a": 3}, "test": {"a": 1}})
    (root / "test" / "a" / "bad.gif").write_bytes(b"GIF89a broken")
    cache_dir = Path(os.environ["KDEDGE_CACHE_DIR"]) / "image_folder"
    before = set(cache_dir.iterdir()) if cache_dir.exists() else set()
    with pytest.raises(KdedgeError, match="bad.gif"):
        load_dataset("image_folder", [root], image_size=4)
    assert set(cache_dir.iterdir()) == before


def test_kdedge_train_on_an_image_folder_records_the_split(tmp_path, make_recipe, cli):
    tree(tmp_path / "imgs", {"train": {"cat": 8, "dog": 8}, "test": {"cat": 2, "dog": 2}}, size=(12, 9))
    recipe = make_recipe({"data": {"dataset": "image_folder", "root": "imgs", "image_size": 8, "val_fraction": 0.25},
                          "teacher": {"train": {"augment": True, "epochs": 1}}})
    result = cli("train", recipe)
    assert result.exit_code == 0, result.stderr + result.stdout
    manifest = json.loads(next((tmp_path / "runs").rglob("manifest.json")).read_text())
    split = manifest["data"]["split"]
    assert split["layout"] == "train+test" and split["per_class"]["val"] == [2, 2] and split["counts"]["test"] == 4
