"""The edge pair on the embedded data (recipes/demo_edge.yaml) through the installed `kdedge` command:
distill -> INT8 export (the fp32 fallback where the plain INT8 fails the gate) -> bench, checked against
computations that do not go through kdedge's own evaluation (marked slow; CI runs it once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.e2e.test_pipeline import _copy_recipe, kdedge

pytestmark = pytest.mark.slow
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("kdedge")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=1800)


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_demo_edge_distill_export_bench(tmp_path: Path):
    recipe = _copy_recipe(REPO / "recipes" / "demo_edge.yaml", tmp_path, output_dir=str(tmp_path / "runs"))
    kdedge("distill", str(recipe), cwd=tmp_path)
    run = tmp_path / "runs" / "demo_edge"
    manifest = json.loads((run / "manifest.json").read_text())
    student = manifest["stages"]["student"]
    assert student["model"] == "mobilenet_v3_small" and manifest["stages"]["baseline"]["status"] == "complete"

    # oracle 1: the recorded test accuracy, recomputed from model.pt in torch on the embedded test split
    from kdedge.data import load_dataset
    from kdedge.inference import predict_logits
    from kdedge.inputs import InputStats
    from kdedge.run import RunDir
    from kdedge.stage_model import load_stage_model

    ds = load_dataset("fashion_mnist_small", [])
    labels = ds.test.labels.numpy()
    model, _ = load_stage_model(RunDir(run), "student")
    recomputed = predict_logits(model, ds.test, InputStats(ds.mean, ds.std), batch_size=256, device=torch.device("cpu"))
    assert len(labels) == manifest["data"]["n_test"]
    assert (recomputed.argmax(1).numpy() == labels).mean() == pytest.approx(student["test"]["accuracy"], abs=1e-6)
    # and by hand: normalised here, a plain eval-mode forward (NCHW; kdedge runs conv nets channels-last,
    # whose float sums may flip a near-tie: one image at most)
    x = (ds.test.images.float() / 255 - torch.tensor(ds.mean).view(1, -1, 1, 1)) / torch.tensor(ds.std).view(1, -1, 1, 1)
    with torch.no_grad():
        torch_logits = model.eval()(x).numpy()
    assert (torch_logits.argmax(1) == labels).mean() == pytest.approx(student["test"]["accuracy"], abs=1 / len(labels))

    # ONNX Runtime INT8 only: --int8 adds the TensorRT form where nvidia-modelopt is installed, whose own
    # per-layer ranking doubles the time (tests/e2e/test_pipeline.py covers that form). --allow-drop: this
    # 3-epoch MobileNetV3's plain INT8 agrees with fp32 on ~98 % of the test images, and keeping its 3
    # (measured here: even 10) most sensitive layers in fp32 does not reach 99 % -- its errors are spread
    # over many layers and many near-tie images. Without it the export is refused (exit 2) with those
    # numbers; with it the export is kept and must be marked as failed in every table. Which models pass
    # depends on the CPU's INT8 kernels, so each is checked for what happened to it.
    exported = _run("export", str(run), "--format", "onnx-int8", "--allow-drop", cwd=tmp_path)
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr
    closing = " ".join(exported.stdout.split())  # the closing table and its notes, unwrapped
    exports = json.loads((run / "manifest.json").read_text())["exports"]
    assert {"student", "baseline", "teacher"} <= set(exports)
    for stage, formats in exports.items():
        entry = formats["onnx-int8"]
        fallback = entry["fp32_fallback"]
        # oracle 2: the ONNX files say how to feed them, and fed that way (numpy + onnxruntime) the fp32 file
        # gives the torch model's accuracy
        for fmt in ("onnx", "onnx-int8"):
            props = _props(run / formats[fmt]["file"])
            mean, std = json.loads(props["kdedge.mean"]), json.loads(props["kdedge.std"])
            assert mean == pytest.approx(list(ds.mean)) and std == pytest.approx(list(ds.std))
            assert json.loads(props["kdedge.classes"]) == list(ds.classes)
            assert props["kdedge.model_stage"] == stage and props["kdedge.export_format"] == fmt
        # the dataset's constants are the training images' statistics (numpy on the raw pixels)
        pixels = ds.train.images.numpy().astype(np.float64) / 255
        assert mean[0] == pytest.approx(pixels.mean(), abs=0.01) and std[0] == pytest.approx(pixels.std(), abs=0.01)
        assert entry["allowed_by_flag"] == bool(entry["parity_failures"])
        if fallback is None:  # the plain INT8 passed: no layer kept in fp32
            assert entry["parity_failures"] == [] and entry["fp32_layers"] == []
            assert entry["parity"]["agreement"] >= 0.99
            continue
        # the plain INT8 failed: the layers tried are listed, with the gate's numbers before and after
        assert 0 <= len(entry["fp32_layers"]) <= 3 and 1 <= fallback["tried"] <= 3
        assert [layer["name"] for layer in fallback["layers"]] == entry["fp32_layers"]
        before, after = fallback["before"], fallback["after"]
        assert before["agreement"] < 0.99 or before["accuracy_drop"] > 0.005 - 1e-9
        assert after == entry["parity"]
        assert fallback["passed"] == (not entry["parity_failures"])
        if fallback["passed"]:
            assert after["agreement"] >= 0.99 and fallback["speed"]["measured"]
        else:  # kept by --allow-drop after the whole budget: the best attempt (maybe the plain one)
            assert fallback["tried"] == 3
        if entry["fp32_layers"]:
            assert f"{stage} onnx-int8: PTQ + {len(entry['fp32_layers'])} fp32 layer" in closing
            assert f"in fp32: {', '.join(entry['fp32_layers'])}" in closing

    fp32 = run / exports["student"]["onnx"]["file"]
    props = _props(fp32)
    fed = ((ds.test.images.numpy() / 255.0 - json.loads(props["kdedge.mean"])[0])
           / json.loads(props["kdedge.std"])[0]).astype(np.float32)
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    ort_logits = session.run(None, {props["kdedge.input_name"]: fed})[0]
    assert np.abs(ort_logits - torch_logits).max() <= 1e-3
    assert (ort_logits.argmax(1) == labels).mean() == pytest.approx(student["test"]["accuracy"], abs=2 / len(labels))

    kdedge("bench", str(run), "--runs", "3", cwd=tmp_path)
    report = json.loads((run / "bench" / "report.json").read_text())
    assert {"student", "baseline", "teacher"} <= set(report["models"])
    rec = report["recommendation"]
    assert rec and rec["lines"]
    for stage in ("student", "baseline"):
        row = report["models"][stage]["runtimes"]["ort-int8"]
        assert row["export"]["fp32_layers"] == exports[stage]["onnx-int8"]["fp32_layers"]
        assert row["sha256"] == exports[stage]["onnx-int8"]["sha256"]
    md = (run / "bench" / "report.md").read_text()
    assert md.index("## What to ship") < md.index("## Models × runtimes")
    routes = md.split("## INT8 routes")[1]
    for stage, formats in exports.items():
        entry = formats["onnx-int8"]
        gate = " †" if entry["allowed_by_flag"] else ""
        n = len(entry["fp32_layers"])
        route = f"PTQ + {n} fp32 layer{'s' if n != 1 else ''}" if n else "PTQ"
        assert f"| {stage} | ort-int8{gate} | {route}" in routes
        for name in entry["fp32_layers"]:
            assert f"`{name}`" in routes
