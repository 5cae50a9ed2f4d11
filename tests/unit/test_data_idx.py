"""idx loaders (fashion_mnist, fashion_mnist_small, mnist) against hand-written files and hand parses."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kdedge.data import DATASETS, load_dataset
from kdedge.data.fashion_mnist_small import EMBEDDED_DIR
from kdedge.errors import KdedgeError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def hand_parse(path: Path) -> np.ndarray:
    """Independent oracle: gzip + struct, no kdedge code."""
    raw = gzip.open(path).read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], np.uint8).reshape(shape)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = 0x800 + array.ndim if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.astype(np.uint8).tobytes()


def write_set(directory: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (directory / (NAMES[key] + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / NAMES[key]).write_bytes(data)
    return arrays


def test_embedded_subset_matches_hand_parse_and_is_stratified():
    d = load_dataset("fashion_mnist_small", [])
    assert d.train.images.shape == (4000, 1, 28, 28) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (1000, 1, 28, 28)
    assert d.train.labels.dtype == torch.int64
    assert torch.bincount(d.train.labels).tolist() == [400] * 10
    assert torch.bincount(d.test.labels).tolist() == [100] * 10
    assert len(d.classes) == 10 and d.hflip_ok and d.source == str(EMBEDDED_DIR)
    oracle = hand_parse(EMBEDDED_DIR / "train-images-idx3-ubyte.gz")
    for i, r, c in [(0, 14, 14), (123, 5, 20), (3999, 27, 0), (2000, 10, 10)]:
        assert int(d.train.images[i, 0, r, c]) == int(oracle[i, r, c])
    np.testing.assert_array_equal(d.test.labels.numpy(), hand_parse(EMBEDDED_DIR / "t10k-labels-idx1-ubyte.gz"))
    assert 0.25 < d.mean[0] < 0.32 and 0.32 < d.std[0] < 0.38
    size = sum(p.stat().st_size for p in EMBEDDED_DIR.iterdir())
    assert size <= 3_000_000
    assert (EMBEDDED_DIR / "LICENSE").read_text().count("Zalando SE") == 1


def test_embedded_subset_is_drawn_from_the_full_data():
    if not (DEBIAN / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    full = hand_parse(DEBIAN / "t10k-images-idx3-ubyte.gz").reshape(10000, -1)
    small = hand_parse(EMBEDDED_DIR / "t10k-images-idx3-ubyte.gz").reshape(1000, -1)
    rows = {r.tobytes() for r in full}
    assert all(r.tobytes() in rows for r in small[:50])


def test_full_debian_files():
    if not (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    d = load_dataset("fashion_mnist", [])
    assert d.train.images.shape == (60000, 1, 28, 28) and d.test.images.shape == (10000, 1, 28, 28)
    assert d.train.images.dtype == torch.uint8 and d.train.labels.dtype == torch.int64
    assert torch.bincount(d.train.labels).tolist() == [6000] * 10
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    assert d.source == str(DEBIAN)
    oracle = hand_parse(DEBIAN / "t10k-images-idx3-ubyte.gz")
    for i, r, c in [(0, 14, 14), (9999, 20, 7), (4321, 3, 25)]:
        assert int(d.test.images[i, 0, r, c]) == int(oracle[i, r, c])
    labels = hand_parse(DEBIAN / "train-labels-idx1-ubyte.gz")
    assert d.train.labels[:100].tolist() == labels[:100].tolist()


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_idx_files_load_from_root(tmp_path, gz):
    arrays = write_set(tmp_path, gz=gz)
    d = load_dataset("mnist", [tmp_path])
    np.testing.assert_array_equal(d.train.images[:, 0].numpy(), arrays["train_images"])
    np.testing.assert_array_equal(d.test.labels.numpy(), arrays["test_labels"])
    assert d.source == str(tmp_path) and not d.hflip_ok


@pytest.mark.parametrize("sub", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_subfolders_and_priority(tmp_path, sub):
    first, second = tmp_path / "a", tmp_path / "b"
    write_set(first / sub, n_train=3, seed=1)
    write_set(second, n_train=5, seed=2)
    d = load_dataset("fashion_mnist", [first, second])
    assert len(d.train) == 3 and d.source == str(first / sub)
    d = load_dataset("fashion_mnist", [second, first])
    assert len(d.train) == 5 and d.source == str(second)


def test_mnist_subfolders(tmp_path):
    write_set(tmp_path / "MNIST" / "raw", n_train=7)
    assert len(load_dataset("mnist", [tmp_path]).train) == 7
    write_set(tmp_path / "x" / "mnist", n_train=2)
    assert len(load_dataset("mnist", [tmp_path / "x"]).train) == 2


def test_not_found_lists_searched_dirs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(KdedgeError) as e:
        load_dataset("mnist", [a, b])
    msg = e.value.message
    for d in (a, a / "mnist", a / "MNIST/raw", b):
        assert str(d) in msg
    assert "train-images-idx3-ubyte" in msg and "\n" not in msg


def test_fashion_not_found_mentions_apt(tmp_path, monkeypatch):
    import kdedge.data.fashion_mnist as fm

    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "nodebian")
    with pytest.raises(KdedgeError) as e:
        load_dataset("fashion_mnist", [tmp_path / "r"])
    msg = e.value.message
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path / "r" / "fashion-mnist") in msg
    assert str(tmp_path / "nodebian") in msg and "KDEDGE_DATA" in msg


def test_truncated_file_names_the_file(tmp_path):
    write_set(tmp_path)
    path = tmp_path / (NAMES["train_images"] + ".gz")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(KdedgeError, match="truncated") as e:
        load_dataset("mnist", [tmp_path])
    assert str(path) in e.value.message


def test_truncated_gzip_stream_names_the_file(tmp_path):
    write_set(tmp_path)
    path = tmp_path / (NAMES["test_images"] + ".gz")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(KdedgeError) as e:
        load_dataset("mnist", [tmp_path])
    assert str(path) in e.value.message


def test_not_gzip_names_the_file(tmp_path):
    write_set(tmp_path)
    path = tmp_path / (NAMES["test_labels"] + ".gz")
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(KdedgeError) as e:
        load_dataset("mnist", [tmp_path])
    assert str(path) in e.value.message


def test_bad_magic_names_the_file(tmp_path):
    arrays = write_set(tmp_path)
    path = tmp_path / (NAMES["train_labels"] + ".gz")
    path.write_bytes(gzip.compress(idx_bytes(arrays["train_labels"], magic=0x0D01)))
    with pytest.raises(KdedgeError, match="magic") as e:
        load_dataset("mnist", [tmp_path])
    assert str(path) in e.value.message


def test_label_count_mismatch_names_the_file(tmp_path):
    write_set(tmp_path, n_train=6)
    path = tmp_path / (NAMES["train_labels"] + ".gz")
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(KdedgeError) as e:
        load_dataset("mnist", [tmp_path])
    assert str(path) in e.value.message and "5 labels" in e.value.message


def test_label_out_of_range(tmp_path):
    write_set(tmp_path, n_train=6)
    path = tmp_path / (NAMES["train_labels"] + ".gz")
    path.write_bytes(gzip.compress(idx_bytes(np.full(6, 10, np.uint8))))
    with pytest.raises(KdedgeError) as e:
        load_dataset("mnist", [tmp_path])
    assert str(path) in e.value.message


def test_registry_and_unknown_option():
    assert {"fashion_mnist", "fashion_mnist_small", "mnist", "mnist_5k", "digits", "cifar10", "image_folder"} <= set(
        DATASETS.names()
    )
    with pytest.raises(KdedgeError, match="image_size"):
        load_dataset("mnist", [], image_size=3)
    with pytest.raises(KdedgeError, match="unknown dataset"):
        load_dataset("nope", [])


def test_generator_is_deterministic(tmp_path):
    from kdedge.data.make_embedded import make_embedded

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for key, n in (("train", 40), ("test", 20)):
        (src).mkdir(exist_ok=True)
        (src / (NAMES[f"{key}_images"] + ".gz")).write_bytes(
            gzip.compress(idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        )
        (src / (NAMES[f"{key}_labels"] + ".gz")).write_bytes(gzip.compress(idx_bytes(np.arange(n) % 10)))
    a = make_embedded(src, tmp_path / "a", 3, 1, seed=5)
    b = make_embedded(src, tmp_path / "b", 3, 1, seed=5)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    d = load_dataset("mnist", [tmp_path / "a"])
    assert torch.bincount(d.train.labels).tolist() == [3] * 10 and len(d.test) == 10
