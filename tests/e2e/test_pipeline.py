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


def test_demo_recipe_distill_chain(tmp_path: Path):
    """The README's main job (make demo) on the embedded Fashion-MNIST subset: teacher, calibration,
    KD student and no-KD baseline, the summary table, then the INT8 export of all three."""
    recipe = _copy_recipe(REPO / "recipes" / "demo.yaml", tmp_path, output_dir=str(tmp_path / "runs"))
    distilled = kdedge("distill", str(recipe), cwd=tmp_path)
    assert "KD: hinton" in distilled.stdout and "baseline" in distilled.stdout
    run = tmp_path / "runs" / "demo"
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["teacher"]["test"]["accuracy"] >= 0.80  # 4k real images, a few epochs
    assert stages["calibration"]["temperature"] > 0
    assert stages["student"]["parameters"] < stages["teacher"]["parameters"]
    shown = kdedge("show", str(run), cwd=tmp_path)
    assert "temperature T*" in shown.stdout
    kdedge("export", str(run), "--int8", cwd=tmp_path)  # default parity gate: refused exports fail here
    exports = json.loads((run / "manifest.json").read_text())["exports"]
    assert set(exports) == {"teacher", "student", "baseline"}
    for formats in exports.values():
        assert {"onnx", "onnx-int8"} <= set(formats)
        assert all(not entry["parity_failures"] for entry in formats.values())
    kdedge("bench", str(run), "--runs", "3", cwd=tmp_path)  # make demo's last step
    report = json.loads((run / "bench" / "report.json").read_text())
    assert report["uncertainty"]["models"]["teacher"]["applicable"]  # the demo teacher has dropout
    assert set(report["uncertainty"]["mupe"]) == {"student", "baseline"}
    assert {"torch", "ort", "ort-int8"} <= set(report["models"]["student"]["runtimes"])


def test_demo_qat_recipe_and_its_exports(tmp_path: Path):
    """Quantized distillation on the embedded data, then the QAT student's TensorRT-form and ORT exports."""
    pytest.importorskip("modelopt", reason="nvidia-modelopt not installed (pip install 'kdedge[modelopt]')")
    recipe = _copy_recipe(REPO / "recipes" / "demo_qat.yaml", tmp_path, output_dir=str(tmp_path / "runs"))
    kdedge("distill", str(recipe), cwd=tmp_path)
    run = tmp_path / "runs" / "demo_qat"
    kdedge("export", str(run), "--format", "onnx-int8-trt", "--models", "student_qat", cwd=tmp_path)
    entry = json.loads((run / "manifest.json").read_text())["exports"]["student_qat"]
    assert entry["onnx-int8-trt"]["qdq"]["zero_points_all_zero"]
    assert entry["onnx-int8-trt"]["quantization"].startswith("QAT scales")
    assert entry["onnx-int8-trt"]["parity"]["agreement"] >= 0.99
    # ORT's own INT8 of the QAT student is PTQ of its weights, and its agreement depends on the CPU's INT8
    # kernels: >= 99 % on an AVX2-only host, 98.6 % on this AVX-512 VNNI one (f9ba0ea alike). So it is
    # kept with --allow-drop here and its gate numbers checked as recorded, not the threshold.
    kdedge("export", str(run), "--format", "onnx-int8", "--models", "student_qat", "--allow-drop", cwd=tmp_path)
    ort_int8 = json.loads((run / "manifest.json").read_text())["exports"]["student_qat"]["onnx-int8"]
    assert ort_int8["parity"]["agreement"] >= 0.95
    assert ort_int8["parity_failures"] == [] or ort_int8["parity"]["agreement"] < 0.99


@pytest.mark.parametrize("name,reports", [
    ("demo_sweep", ["sweep/distill.losses_0.temperature/sweep", "sweep/distill.losses_0.temperature/ensemble"]),
    ("demo_chain", ["chain/chain", "symmetry/symmetry"]),
    ("demo_features", []),
    ("demo_uncertainty", ["sweep/student.model/sweep", "sweep/student.model/uncertainty"]),
])
def test_shipped_experiment_recipes_run(name: str, reports: list[str], tmp_path: Path):
    recipe = _copy_recipe(REPO / "recipes" / f"{name}.yaml", tmp_path, output_dir=str(tmp_path / "runs"))
    kdedge("distill", str(recipe), cwd=tmp_path)
    run = tmp_path / "runs" / name
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["student"]["status"] == "complete"
    assert stages.get("baseline", {"status": "complete"})["status"] == "complete"
    for report in reports:
        assert json.loads((run / f"{report}.json").read_text())
        assert (run / f"{report}.md").is_file() and (run / f"{report}.png").is_file()


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
