"""cifar10: a tiny fake batch folder / archive in the real pickle format, and malicious pickles."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from kdedge.data import load_dataset
from kdedge.errors import KdedgeError

NAMES = [f"label{i}" for i in range(10)]


def fake_batches(directory, n=4, protocol=2):
    """Batches shaped like the real ones: dict with b'data' uint8 [N,3072] and b'labels' list."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in (np.arange(n) + i) % 10],
            b"filenames": [f"{name}_{j}.png".encode() for j in range(n)],
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        data[name] = batch
    meta = {b"label_names": [s.encode() for s in NAMES], b"num_cases_per_batch": n, b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return data


@pytest.mark.parametrize("protocol", [2, 5])
def test_fake_batch_dir_loads(tmp_path, protocol):
    batches = fake_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    d = load_dataset("cifar10", [tmp_path])
    assert d.train.images.shape == (20, 3, 32, 32) and d.test.images.shape == (4, 3, 32, 32)
    assert d.train.images.dtype == torch.uint8 and d.train.labels.dtype == torch.int64
    assert d.classes == tuple(NAMES) and d.hflip_ok
    row = batches["data_batch_2"][b"data"][1]
    # channel-major rows: pixel (r, c) of green is at 1024 + 32 r + c
    assert int(d.train.images[5, 1, 3, 7]) == int(row[1024 + 32 * 3 + 7])
    assert int(d.train.images[5, 2, 31, 0]) == int(row[2048 + 32 * 31])
    assert d.test.labels.tolist() == batches["test_batch"][b"labels"]
    assert d.mean == pytest.approx((0.4914, 0.4822, 0.4465)) and d.std == pytest.approx((0.2470, 0.2435, 0.2616))


def test_archive_loads(tmp_path):
    fake_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "root" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    d = load_dataset("cifar10", [tmp_path / "root"])
    assert len(d.train) == 20 and d.source == str(archive)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_batches(folder)
    marker = tmp_path / "pwned"
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil(marker)}
    (folder / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(KdedgeError) as e:
        load_dataset("cifar10", [tmp_path])
    assert str(folder / "data_batch_3") in e.value.message and "refused" in e.value.message
    assert not marker.exists()


def test_malicious_global_via_builtins_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_batches(folder)
    # hand-made protocol-0 pickle calling builtins.eval
    (folder / "batches.meta").write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(KdedgeError, match="builtins.eval"):
        load_dataset("cifar10", [tmp_path])


def test_corrupt_pickle_names_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_batches(folder)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00")  # truncated
    with pytest.raises(KdedgeError) as e:
        load_dataset("cifar10", [tmp_path])
    assert str(folder / "test_batch") in e.value.message


def test_not_found_says_where_to_put_it(tmp_path):
    with pytest.raises(KdedgeError) as e:
        load_dataset("cifar10", [tmp_path / "r"])
    msg = e.value.message
    assert str(tmp_path / "r" / "cifar-10-batches-py") in msg and "cifar-10-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg


def test_safe_loads_handles_python2_style_pickle():
    from kdedge.data.safe_pickle import safe_loads

    # protocol-2 pickle as Python 2 numpy wrote it: numpy.core.multiarray._reconstruct, byte strings
    arr = np.arange(6, dtype=np.uint8)
    blob = pickle.dumps({"k": arr}, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    out = safe_loads(blob)
    np.testing.assert_array_equal(out["k"], arr)
    assert isinstance(safe_loads(io.BytesIO(pickle.dumps([b"a"], protocol=0)).read())[0], bytes)
