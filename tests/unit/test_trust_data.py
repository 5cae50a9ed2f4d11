"""Hostile data files: each is one `kdedge: error:` line, checked before anything big is allocated and
before a run directory is written. The files are written byte by byte here (pickle opcodes, idx
headers, PNG chunks, the test-split .npz) so that no kdedge writer can hide a problem of its reader."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from kdedge.data import load_dataset
from kdedge.errors import KdedgeError
from tests.unit.test_data_cifar import fake_batches
from tests.unit.test_data_idx import NAMES, idx_bytes, write_set

HUGE = 2**37  # 128 GiB of uint8: more than the test machines have


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(value: int) -> bytes:
    return b"\x8a" + bytes([(value.bit_length() + 8) // 8]) + value.to_bytes((value.bit_length() + 8) // 8, "little")


# pickles that ask for HUGE bytes through each allowed constructor; a real batch never calls them this way
BIG_PICKLES = {
    "_reconstruct shape": _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
                          + _int(HUGE) + b"\x85" + b"U\x01B\x87R.",
    "ndarray shape": _global("numpy", "ndarray") + _int(HUGE) + b"\x85U\x02u1\x86R.",
    "subarray dtype": _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray") + b"K\x01\x85"
                      + _global("numpy", "dtype") + b"U\x02u1" + _int(HUGE) + b"\x85\x86\x85R\x87R.",
    "bytearray(n)": _global("__builtin__", "bytearray") + b"(" + _int(HUGE) + b"tR.",
    "BINBYTES8 length": b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc.",
}


@pytest.mark.parametrize("case", BIG_PICKLES)
def test_cifar_batch_asking_for_hundreds_of_gib_is_one_line(tmp_path, case):
    d = tmp_path / "cifar-10-batches-py"
    fake_batches(d)
    (d / "test_batch").write_bytes(BIG_PICKLES[case])
    with pytest.raises(KdedgeError, match=r"test_batch: corrupt pickle") as e:
        load_dataset("cifar10", [tmp_path])
    assert "\n" not in e.value.message


def test_the_allowed_constructors_still_build_real_batches(tmp_path):
    """The size checks refuse only sizes beyond the file: ordinary pickles of each kind still load."""
    from kdedge.data.safe_pickle import safe_loads

    data = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    for protocol in (0, 2, 5):
        back = safe_loads(pickle.dumps({b"data": data, b"extra": bytearray(b"xy")}, protocol=protocol))
        assert np.array_equal(back[b"data"], data) and back[b"extra"] == bytearray(b"xy")
    assert safe_loads(_global("__builtin__", "bytearray") + b"(K\x04tR.") == bytearray(4)


@pytest.mark.parametrize("label", [2**70, -(2**70), 10])
def test_cifar_label_out_of_range_or_int64_is_one_line(tmp_path, label):
    d = tmp_path / "cifar-10-batches-py"
    batches = fake_batches(d)
    batch = batches["data_batch_3"]
    batch[b"labels"][1] = label
    (d / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(KdedgeError, match=r"data_batch_3: .*labels.*0\.\.9") as e:
        load_dataset("cifar10", [tmp_path])
    assert "\n" not in e.value.message


def test_cifar_archive_member_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    import io
    import tarfile

    from kdedge.data import cifar10

    monkeypatch.setattr(cifar10, "MAX_MEMBER_BYTES", 1000)  # a bomb in miniature: the member is 4 KB
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in cifar10.NEEDED:
            info = tarfile.TarInfo(f"{cifar10.BATCH_DIR}/{name}")
            info.size = 4096
            tar.addfile(info, io.BytesIO(bytes(4096)))
    (tmp_path / cifar10.ARCHIVE).write_bytes(buf.getvalue())
    with pytest.raises(KdedgeError, match=r"member cifar-10-batches-py/data_batch_1 is over 1,000 bytes"):
        load_dataset("cifar10", [tmp_path])


# ---------------------------------------------------------------------------------------------------
# idx headers


def _bad_images(directory: Path, dims: tuple[int, int, int], body: bytes = b"") -> Path:
    write_set(directory)
    path = directory / (NAMES["train_images"] + ".gz")
    path.write_bytes(gzip.compress(struct.pack(">I3I", 0x803, *dims) + body))
    return path


@pytest.mark.parametrize("dims, says", [
    ((0, 28, 28), "has a zero dimension"),
    ((6, 0, 28), "has a zero dimension"),
    ((2**31, 2**31, 4), "asks for 18,446,744,073,709,551,616 bytes"),  # 2**64: 0 in int64 arithmetic
    ((2**32 - 1,) * 3, "asks for"),
])
def test_idx_header_with_zero_or_overflowing_dims_is_one_line(tmp_path, dims, says):
    path = _bad_images(tmp_path, dims)
    with pytest.raises(KdedgeError, match="idx header shape") as e:
        load_dataset("mnist", [tmp_path])
    assert says in e.value.message and str(path) in e.value.message


def test_idx_body_is_read_only_as_far_as_the_header_says(tmp_path):
    """A gzip bomb behind a small header: the error comes after header size + 1 bytes, not the whole body."""
    from kdedge.data.idx import read_idx

    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:  # 64 MiB of zeros, a few hundred KB on disk
        fh.write(struct.pack(">I3I", 0x803, 1, 28, 28))
        zeros = bytes(1 << 20)
        for _ in range(64):
            fh.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(KdedgeError, match=r"idx body has more than 784 bytes but the header shape \(1, 28, 28\)"):
            read_idx(path, 3, "fix")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # far below the 64 MiB body
    array = idx_bytes(np.full((2, 3, 4), 7, np.uint8))
    (tmp_path / "ok").write_bytes(array)
    assert np.array_equal(read_idx(tmp_path / "ok", 3, "fix"), np.full((2, 3, 4), 7, np.uint8))


def test_idx_zero_dims_fail_before_the_run_is_written(tmp_path, make_recipe, cli):
    data = tmp_path / "mnist"
    _bad_images(data, (6, 0, 28))  # 6 empty images for the 6 labels: every later count agrees
    recipe = make_recipe({"data": {"dataset": "mnist", "root": str(data), "val_fraction": 0.2}})
    result = cli("train", recipe)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdedge: error: ") and "zero dimension" in lines[0]
    assert not (tmp_path / "runs").exists()  # no run, so none left marked "running"


# ---------------------------------------------------------------------------------------------------
# image folders


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB (one tiny IDAT: the decoder is never reached)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(30_000, 30_000), (10_000, 5_000)])  # over Pillow's limit; over ours
def test_decompression_bomb_png_is_one_line(tmp_path, width, height):
    pytest.importorskip("PIL")
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        for name in ("ok.png", "ok2.png"):  # two train images: one is drawn for validation
            Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / split / "a" / name)
    bomb = tmp_path / "train" / "a" / "bomb.png"
    bomb.write_bytes(_png(width, height))
    # Pillow refuses the first itself (past twice its limit); ours refuses the second, before decoding
    with pytest.raises(KdedgeError, match=r"bomb\.png: .*decompression bomb") as e:
        load_dataset("image_folder", [tmp_path])
    assert "\n" not in e.value.message
    bomb.unlink()
    assert load_dataset("image_folder", [tmp_path]).train.images.shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------------------------------
# the test-split file of `bench --test-data`


def _split_file(path: Path, labels: np.ndarray, mean: list, std: list, classes: list) -> Path:
    """A --test-data file written from its documented layout, with a correct sha256 (so only the new
    checks can refuse it): sha256 of the sorted-key JSON of the fields, then the images, then int64 labels."""
    images = np.zeros((len(labels), 1, 8, 8), np.uint8)
    fields = {"format": "kdedge-test-data-1", "dataset": "digits", "images_shape": list(images.shape),
              "mean": mean, "std": std}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    digest.update(images.tobytes())
    digest.update(labels.astype("<i8").tobytes())
    header = {**fields, "sha256": digest.hexdigest(), "classes": classes}
    with open(path, "wb") as fh:
        np.savez(fh, images=images, labels=labels, header=np.array(json.dumps(header)))
    return path


NO_DATA = {"exports": {}}  # a run that recorded no data: section (nothing to compare the file with)


@pytest.mark.parametrize("mean, std", [([float("nan")], [0.5]), ([float("inf")], [0.5]), ([0.5], [float("nan")]),
                                       ([True], [0.5])])
def test_test_data_with_a_non_finite_mean_or_std_is_refused(tmp_path, mean, std):
    from kdedge.bench.split_file import read_split

    path = _split_file(tmp_path / "t.npz", np.arange(4) % 2, mean, std, ["a", "b"])
    with pytest.raises(KdedgeError, match="fields mean/std must be equal-length lists of finite numbers"):
        read_split(path, NO_DATA, [])


@pytest.mark.parametrize("manifest, classes, says", [
    ({"data": {"num_classes": 2}}, ["a", "b", "c"], "the run has 2 classes"),
    (NO_DATA, ["a", "b"], "the run has 2 classes"),   # no recorded count: the file's own class list
    (NO_DATA, None, "no class count"),
])
def test_test_data_labels_at_or_over_the_class_count_are_refused(tmp_path, manifest, classes, says):
    from kdedge.bench.split_file import read_split

    path = _split_file(tmp_path / "t.npz", np.array([0, 1, 2, 1]), [0.5], [0.5], classes)
    with pytest.raises(KdedgeError, match="field labels") as e:
        read_split(path, manifest, [])
    assert says in e.value.message
    ok = _split_file(tmp_path / "ok.npz", np.array([0, 1, 1, 0]), [0.5], [0.5], ["a", "b"])
    assert read_split(ok, manifest, []).labels.tolist() == [0, 1, 1, 0]
