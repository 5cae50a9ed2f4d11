"""`kdedge bench` on a small real run (digits, CNN teacher and student, exported): the report's numbers
against independent computations (onnxruntime sessions, torch, torchmetrics) and the one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TINY_RECIPE, deep_update
from tests.unit.test_export import CONV_RUN, LOOSE, invoke

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    recipe = deep_update(TINY_RECIPE, {"output_dir": str(root / "runs"), **CONV_RUN, "name": "b"})
    recipe["teacher"]["model"] = CONV_RUN["teacher"]["model"]
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert invoke("distill", path).exit_code == 0
    run = root / "runs" / "b"
    result = invoke("export", run, "--int8", "--models", "teacher,student", *LOOSE)
    assert result.exit_code == 0, result.output
    assert invoke("bench", run, "--runs", "2").exit_code == 0
    return run


def report(run: Path) -> dict:
    return json.loads((run / "bench" / "report.json").read_text())


def digits_test():
    from kdedge.data import load_dataset

    ds = load_dataset("digits", [])
    x = (ds.test.images.float() / 255 - torch.tensor(ds.mean).view(1, -1, 1, 1)) / torch.tensor(ds.std).view(1, -1, 1, 1)
    return x.numpy(), ds.test.labels


def test_report_holds_every_model_and_runtime(exported_run):
    r = report(exported_run)
    assert r["schema"] == "kdedge-bench-report-2"
    assert set(r["models"]) == {"teacher", "student"}
    for info in r["models"].values():
        assert set(info["runtimes"]) == {"torch", "ort", "ort-int8"}
        assert info["macs"] > 0 and info["parameters"] > 0 and info["train_time_s"] > 0
        for rt in info["runtimes"].values():
            for key in ("accuracy", "nll", "ece", "mce", "size_bytes", "batch1", "batch64"):
                assert key in rt
            assert rt["batch1"]["runs"] == 10 and rt["batch1"]["p10_ms"] <= rt["batch1"]["median_ms"] <= rt["batch1"]["p90_ms"]
    assert r["machine"]["cpu"] and r["versions"]["onnxruntime"] and r["threads"] >= 1
    assert r["data"]["source"] == "dataset" and len(r["data"]["test_sha256"]) == 64
    assert not {"host", "device_info", "trtexec"} & r.keys()  # remote / Jetson-only sections
    for name in ("report.md", "reliability.png"):
        assert (exported_run / "bench" / name).is_file()


def test_accuracy_and_ece_per_runtime_match_independent_computation(exported_run):
    from torchmetrics.functional.classification import multiclass_calibration_error

    x, labels = digits_test()
    r = report(exported_run)
    manifest = json.loads((exported_run / "manifest.json").read_text())
    for fmt, runtime in (("onnx", "ort"), ("onnx-int8", "ort-int8")):
        path = exported_run / manifest["exports"]["student"][fmt]["file"]
        logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        probs = torch.softmax(torch.from_numpy(logits).double(), 1)
        got = r["models"]["student"]["runtimes"][runtime]
        assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == labels.numpy()).mean()))
        expected_ece = multiclass_calibration_error(probs.float(), labels, num_classes=10, n_bins=10, norm="l1")
        assert got["ece"] == pytest.approx(float(expected_ece), abs=1e-6)


def test_ratio_is_teacher_over_student_median_on_the_same_runtime(exported_run):
    r = report(exported_run)
    for runtime in ("torch", "ort", "ort-int8"):
        t = r["models"]["teacher"]["runtimes"][runtime]["batch1"]["median_ms"]
        s = r["models"]["student"]["runtimes"][runtime]["batch1"]["median_ms"]
        assert r["ratios"]["student"][runtime]["batch1"] == pytest.approx(t / s)


def test_json_flag_prints_the_report(exported_run, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(exported_run, dst)
    result = invoke("bench", dst, "--runs", "1", "--runtime", "ort", "--json")
    assert result.exit_code == 0, result.output
    printed = result.stdout[result.stdout.index("{"):]
    assert json.loads(printed)["schema"] == "kdedge-bench-report-2"


def test_run_without_exports_says_to_export(tmp_path, make_recipe):
    recipe = make_recipe({"student": {"model": {"name": "mlp", "widths": [8]}, "train": TINY_RECIPE["teacher"]["train"]},
                          "distill": {"losses": [{"name": "hinton", "weight": 1.0}], "baseline": False}})
    assert invoke("distill", recipe).exit_code == 0
    result = invoke("bench", tmp_path / "runs" / "tiny")
    assert result.exit_code == 2 and "kdedge export" in result.output and "Traceback" not in result.output


def test_runtime_not_installed_names_what_to_install(exported_run, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    result = invoke("bench", exported_run, "--runtime", "ort")
    assert result.exit_code == 2 and "pip install onnxruntime" in result.output


def test_unknown_runtime_and_wrong_device(exported_run):
    result = invoke("bench", exported_run, "--runtime", "tflite")
    assert result.exit_code == 2 and "ort-int8" in result.output
    result = invoke("bench", exported_run, "--runtime", "trt")
    assert result.exit_code == 2 and "not available on --device cpu" in result.output


def test_exported_input_shape_must_match_the_data(tmp_path):
    from kdedge.bench.runtimes import check_input_shape
    from kdedge.errors import KdedgeError
    from kdedge.export.onnx_fp32 import export_onnx
    from kdedge.models import build_model

    path = tmp_path / "m.onnx"
    export_onnx(build_model("mlp", in_channels=1, num_classes=3, image_size=28, widths=[4]), torch.zeros(2, 1, 28, 28),
                path)
    check_input_shape(path, (1, 28, 28))
    with pytest.raises(KdedgeError, match=r"takes inputs \[batch, 1, 28, 28\] but the test data is \[batch, 1, 8, 8\]"):
        check_input_shape(path, (1, 8, 8))


def test_tampered_export_is_refused(exported_run, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(exported_run, dst)
    (dst / "exports/student/model.int8.onnx").write_bytes(b"x")
    result = invoke("bench", dst, "--runtime", "ort-int8")
    assert result.exit_code == 2 and "changed since" in result.output


def test_models_without_dropout_are_reported_as_such(exported_run):
    unc = report(exported_run)["uncertainty"]
    assert unc["samples"] == 100
    for stage in ("teacher", "student"):
        assert unc["models"][stage] == {"applicable": False, "reason": unc["models"][stage]["reason"]}
        assert "no dropout" in unc["models"][stage]["reason"]
    assert "mupe" not in unc  # needs the teacher's MC confidence
    assert unc["masks"] == "independent"  # the default: each model its own dropout masks (seed 000's MUPE)


def test_mupe_masks_option_is_recorded(exported_run, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(exported_run, dst)
    result = invoke("bench", dst, "--runtime", "torch", "--runs", "1", "--mc-samples", "2", "--mupe-masks", "shared")
    assert result.exit_code == 0, result.output
    assert report(dst)["uncertainty"]["masks"] == "shared"
    bad = invoke("bench", dst, "--mupe-masks", "same")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_bench_run_loads_no_training_code(exported_run, tmp_path):
    # the whole `kdedge bench` command in a fresh interpreter (a Jetson only measures): which modules
    # did it load by the time it exited?
    loaded = tmp_path / "modules.txt"
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: open({str(loaded)!r}, 'w').write('\\n'.join(sorted(sys.modules))))\n"
            f"sys.argv = ['kdedge', 'bench', {str(exported_run)!r}, '--runs', '2', '--mc-samples', '3']\n"
            "from kdedge.cli import main\nmain()\n")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    modules = loaded.read_text().split()
    assert "kdedge.stages.bench" in modules and "onnxruntime" in modules  # it did measure
    training = [m for m in modules if m.startswith(("kdedge.train", "kdedge.losses", "kdedge.stages.distill"))]
    assert training == []
