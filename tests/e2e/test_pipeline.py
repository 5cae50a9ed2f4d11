"""End-to-end runs on real data through the installed `kdedge` command (marked slow; CI runs them once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def kdedge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("kdedge")
    proc = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return proc


def _copy_recipe(src: Path, dst_dir: Path, **overrides) -> Path:
    recipe = yaml.safe_load(src.read_text())
    recipe.update(overrides)
    dst = dst_dir / src.name
    dst.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return dst


def test_demo_recipe_train_calibrate_show(tmp_path: Path):
    """The README's main job (make demo), on the embedded Fashion-MNIST subset."""
    recipe = _copy_recipe(REPO / "recipes" / "demo.yaml", tmp_path, output_dir=str(tmp_path / "runs"))
    kdedge("train", str(recipe), cwd=tmp_path)
    run = tmp_path / "runs" / "demo"
    calibrated = kdedge("calibrate", str(run), cwd=tmp_path)
    assert "T* =" in calibrated.stdout
    shown = kdedge("show", str(run), cwd=tmp_path)
    assert "temperature T*" in shown.stdout
    teacher = json.loads((run / "manifest.json").read_text())["stages"]["teacher"]
    assert teacher["test"]["accuracy"] >= 0.80  # 4k real images, a few epochs


@pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="full Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_full_fashion_mnist_short_budget(tmp_path: Path):
    """Full 60k/10k Fashion-MNIST from Debian's files: a short ResNet-8 run trains and calibrates."""
    recipe = {
        "name": "fmnist_short", "output_dir": str(tmp_path / "runs"), "device": "cpu",
        "data": {"dataset": "fashion_mnist"},
        "teacher": {"model": {"name": "resnet8", "dropout": 0.1},
                    "train": {"epochs": 2, "batch_size": 128, "optimizer": {"lr": 0.1},
                              "schedule": {"name": "cosine", "warmup_epochs": 0.3}}},
    }
    path = tmp_path / "fmnist_short.yaml"
    path.write_text(yaml.safe_dump(recipe))
    kdedge("train", str(path), cwd=tmp_path)
    kdedge("calibrate", str(tmp_path / "runs" / "fmnist_short"), cwd=tmp_path)
    run = tmp_path / "runs" / "fmnist_short"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["n_train"] + manifest["data"]["n_val"] == 60000 and manifest["data"]["n_test"] == 10000
    assert manifest["stages"]["teacher"]["test"]["accuracy"] >= 0.85
    cal = json.loads((run / "teacher" / "calibration.json").read_text())
    assert cal["after"]["val"]["nll"] <= cal["before"]["val"]["nll"]  # T* minimises val NLL (never fit on test)
