"""`kdedge bench`'s on-device MC figures (kdedge/bench/mc_onnx.py): the exported MC graphs run by ONNX Runtime,
their metrics within their bounds (entropy <= log C, ...), MUPE against the teacher, the
latency against one deterministic pass, and the report section."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kdedge.bench import mc_onnx
from kdedge.export.onnx_fp32 import export_onnx
from kdedge.export.onnx_mc import export_mc_onnx
from kdedge.io import sha256_file
from kdedge.models import build_model

pytest.importorskip("onnxruntime")


def record(root: Path, path: Path, **extra) -> dict:
    return {"file": path.relative_to(root).as_posix(), "sha256": sha256_file(path), **extra}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("run")
    exports: dict = {}
    for stage, dropout in (("teacher", 0.4), ("student", 0.2)):
        torch.manual_seed(len(stage))
        model = build_model("cnn", in_channels=1, num_classes=4, image_size=8, channels=[4], dropout=dropout).eval()
        out = root / "exports" / stage
        out.mkdir(parents=True)
        export_onnx(model, torch.zeros(2, 1, 8, 8), out / "model.onnx")
        export_mc_onnx(model, 8, torch.zeros(2, 1, 8, 8), out / "model.mc.onnx")
        exports[stage] = {"onnx": record(root, out / "model.onnx"),
                          "onnx-mc": record(root, out / "model.mc.onnx", mc_samples=8)}
    return root, exports


def test_exported_mc_figures_metrics_mupe_and_latency(run):
    root, exports = run
    images = np.random.default_rng(0).standard_normal((40, 1, 8, 8), dtype=np.float32)
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 4, 40))
    result = mc_onnx.exported_uncertainty(root, exports, ["teacher", "student"], images, labels, threads=1,
                                          batch=16, rounds=2, runs=3)
    assert set(result["models"]) == {"teacher", "student"}
    for stage in ("teacher", "student"):
        m = result["models"][stage]["ort-mc"]
        assert m["samples"] == 8 and m["n"] == 40
        assert 0 <= m["accuracy"] <= 1 and 0.25 <= m["mean_confidence"] <= 1
        assert 0 < m["mean_entropy"] <= math.log(4) + 1e-6 and m["mean_variance"] > 0
        lat = m["latency"]
        assert lat["deterministic_format"] == "onnx" and lat["mc"]["runs"] == 6
        assert lat["mc_over_deterministic"] == pytest.approx(lat["mc"]["median_ms"] / lat["deterministic"]["median_ms"])
    assert set(result["mupe"]["ort-mc"]) == {"student"} and result["mupe"]["ort-mc"]["student"] > 0
    lines = "\n".join(mc_onnx.report_lines({"uncertainty_exported": result, "uncertainty": {}}))
    assert "| teacher | ort-mc | 8 |" in lines and "not measured" in lines


def test_runs_without_an_mc_export_say_how_to_make_one(run):
    root, exports = run
    plain = {s: {"onnx": e["onnx"]} for s, e in exports.items()}
    result = mc_onnx.exported_uncertainty(root, plain, ["teacher"], np.zeros((2, 1, 8, 8), np.float32),
                                          torch.zeros(2, dtype=torch.long), threads=1, batch=2, rounds=1, runs=1)
    assert "--mc-dropout" in result["skipped"] and mc_onnx.report_lines({"uncertainty_exported": result}) == []
