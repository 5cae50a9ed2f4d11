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
    assert "| teacher | ort-mc | 8 |" in lines and "--device jetson" in lines  # where TensorRT's MC is measured
    assert result["tensorrt"]["measured"] is False


def test_runs_without_an_mc_export_say_how_to_make_one(run):
    root, exports = run
    plain = {s: {"onnx": e["onnx"]} for s, e in exports.items()}
    result = mc_onnx.exported_uncertainty(root, plain, ["teacher"], np.zeros((2, 1, 8, 8), np.float32),
                                          torch.zeros(2, dtype=torch.long), threads=1, batch=2, rounds=1, runs=1)
    assert "--mc-dropout" in result["skipped"] and mc_onnx.report_lines({"uncertainty_exported": result}) == []


# ---------------------------------------------------------------------------------------------------
# TensorRT on a Jetson: trtexec's engines (kdedge/bench/jetson.py) run for the MC statistics. TensorRT cannot
# be installed here, so a stand-in engine runner returns fixed outputs: what is checked is that kdedge reads
# each named output, computes the metrics by their textbook definitions, takes trtexec's latencies and
# MUPE against the teacher's engine, and reports a failed engine without losing the others.


def _fixed_outputs(seed: int, n: int, classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, classes)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    entropy = -(probs * np.log(probs)).sum(1)
    return {"probs": probs, "entropy": entropy.astype(np.float32), "variance": rng.random(n).astype(np.float32) / 100,
            "logits": logits}


def _trtexec_section(stages, mc_ms: float, int8_ms: float) -> dict:
    lat = lambda ms: {"batch1": {"latency": {"median_ms": ms}}}  # noqa: E731
    return {"available": True, "trtexec": "/usr/src/tensorrt/bin/trtexec",
            "models": {s: {"mc-int8": {"export": "onnx-mc-int8-trt", "engine": f"{s}.mc-int8.engine", **lat(mc_ms)},
                           "int8": {"export": "onnx-int8-trt", "engine": f"{s}.int8.engine", **lat(int8_ms)}}
                       for s in stages}}


def test_tensorrt_mc_engines_give_textbook_metrics_trtexec_latency_and_mupe(run, tmp_path):
    root, exports = run
    trt_exports = {s: {**e, "onnx-mc-int8-trt": {"file": "x", "sha256": "y", "mc_samples": 8}} for s, e in exports.items()}
    n, classes = 30, 4
    outputs = {"teacher": _fixed_outputs(0, n, classes), "student": _fixed_outputs(1, n, classes)}
    opened = []

    def runner(engine: Path):
        opened.append(engine)
        stage = engine.name.split(".")[0]
        return lambda x: {k: v[int(x[0, 0, 0, 0]):int(x[0, 0, 0, 0]) + len(x)] for k, v in outputs[stage].items()}

    images = np.zeros((n, 1, 8, 8), np.float32)
    images[:, 0, 0, 0] = np.arange(n)  # the stand-in reads its rows' offsets from the first pixel
    labels = torch.from_numpy(np.random.default_rng(2).integers(0, classes, n))
    result = mc_onnx.exported_uncertainty(root, trt_exports, ["teacher", "student"], images, labels, threads=1,
                                          batch=7, rounds=1, runs=1, trtexec=_trtexec_section(["teacher", "student"],
                                                                                               2.5, 0.5),
                                          bench_dir=tmp_path, engine_runner=runner)
    assert [p.relative_to(tmp_path).as_posix() for p in opened] == ["trt/teacher.mc-int8.engine",
                                                                    "trt/student.mc-int8.engine"]
    assert result["tensorrt"]["measured"] is True and "errors" not in result["tensorrt"]
    for stage in ("teacher", "student"):
        m, out = result["models"][stage]["trt-mc-int8"], outputs[stage]
        assert m["format"] == "onnx-mc-int8-trt" and m["samples"] == 8 and m["n"] == n
        assert m["accuracy"] == pytest.approx(float((out["probs"].argmax(1) == labels.numpy()).mean()))
        assert m["mean_confidence"] == pytest.approx(float(out["probs"].max(1).mean()), rel=1e-6)
        assert m["mean_entropy"] == pytest.approx(float(out["entropy"].mean()), rel=1e-6)
        assert m["mean_variance"] == pytest.approx(float(out["variance"].mean()), rel=1e-6)
        assert m["latency"]["source"] == "trtexec" and m["latency"]["mc_over_deterministic"] == pytest.approx(5.0)
        assert "ort-mc" in result["models"][stage]  # ONNX Runtime's rows stay beside TensorRT's
    conf_t, conf_s = outputs["teacher"]["probs"].max(1), outputs["student"]["probs"].max(1)
    assert result["mupe"]["trt-mc-int8"]["student"] == pytest.approx(float(((conf_t - conf_s) ** 2).mean()), rel=1e-6)
    lines = "\n".join(mc_onnx.report_lines({"uncertainty_exported": result, "uncertainty": {}}))
    assert "| student | trt-mc-int8 | 8 |" in lines and "| 2.500 | 5.00× onnx-int8-trt |" in lines


def test_tensorrt_mc_engine_failures_are_reported_and_the_rest_kept(run, tmp_path):
    from kdedge.errors import KdedgeError

    root, exports = run
    trt_exports = {s: {**e, "onnx-mc-int8-trt": {"file": "x", "sha256": "y", "mc_samples": 8}} for s, e in exports.items()}
    section = _trtexec_section(["teacher", "student"], 1.0, 1.0)
    section["models"]["student"]["mc-int8"] = {"export": "onnx-mc-int8-trt", "engine": None,
                                               "error": "trtexec: RandomUniformLike unsupported"}

    def runner(engine: Path):
        raise KdedgeError("running a TensorRT engine needs a CUDA GPU; none is visible to torch")

    images = np.zeros((4, 1, 8, 8), np.float32)
    result = mc_onnx.exported_uncertainty(root, trt_exports, ["teacher", "student"], images,
                                          torch.zeros(4, dtype=torch.long), threads=1, batch=4, rounds=1, runs=1,
                                          trtexec=section, bench_dir=tmp_path, engine_runner=runner)
    trt = result["tensorrt"]
    assert trt["measured"] is False
    assert trt["errors"] == {"teacher": "running a TensorRT engine needs a CUDA GPU; none is visible to torch",
                             "student": "trtexec: RandomUniformLike unsupported"}
    assert all("trt-mc-int8" not in m for m in result["models"].values()) and "ort-mc" in result["models"]["student"]
    lines = "\n".join(mc_onnx.report_lines({"uncertainty_exported": result, "uncertainty": {}}))
    assert "TensorRT MC engine of student: not measured (trtexec: RandomUniformLike unsupported)" in lines
    # no trtexec on the device, or no TensorRT-form MC export: one note each
    gone = mc_onnx.exported_uncertainty(root, trt_exports, ["teacher"], images, torch.zeros(4, dtype=torch.long),
                                        threads=1, batch=4, rounds=1, runs=1, bench_dir=tmp_path,
                                        trtexec={"available": False, "reason": "trtexec not found on PATH"})
    assert gone["tensorrt"] == {"measured": False, "note": "TensorRT not measured: trtexec not found on PATH"}
    plain = mc_onnx.exported_uncertainty(root, exports, ["teacher"], images, torch.zeros(4, dtype=torch.long),
                                         threads=1, batch=4, rounds=1, runs=1, trtexec=section, bench_dir=tmp_path)
    assert "--mc-dropout" in plain["tensorrt"]["note"] and plain["tensorrt"]["measured"] is False


def test_tensorrt_mc_engine_crashes_and_nan_outputs_are_one_line_each(run, tmp_path):
    root, exports = run
    trt_exports = {s: {**e, "onnx-mc-int8-trt": {"file": "x", "sha256": "y", "mc_samples": 8}} for s, e in exports.items()}
    n = 6
    good = _fixed_outputs(0, n, 4)

    def runner(engine: Path):
        if engine.name.startswith("teacher"):
            def out_of_memory(x):
                raise RuntimeError("CUDA out of memory")
            return out_of_memory
        return lambda x: {**{k: v[:len(x)] for k, v in good.items()}, "entropy": np.full(len(x), np.nan, np.float32)}

    result = mc_onnx.exported_uncertainty(root, trt_exports, ["teacher", "student"], np.zeros((n, 1, 8, 8), np.float32),
                                          torch.zeros(n, dtype=torch.long), threads=1, batch=n, rounds=1, runs=1,
                                          trtexec=_trtexec_section(["teacher", "student"], 1.0, 1.0),
                                          bench_dir=tmp_path, engine_runner=runner)
    assert result["tensorrt"]["errors"] == {"teacher": "RuntimeError: CUDA out of memory",
                                            "student": "the engine's entropy hold NaN or infinite values"}
    # rendered even with no ONNX Runtime MC rows, and a report from an older kdedge (a string note) renders
    no_rows = {"skipped": "no MC export", "tensorrt": result["tensorrt"]}
    lines = mc_onnx.report_lines({"uncertainty_exported": no_rows})
    assert "TensorRT MC engine of teacher: not measured (RuntimeError: CUDA out of memory)." in lines
    old = {**result, "tensorrt": "TensorRT (--device jetson / --host): not measured"}
    assert "TensorRT (--device jetson / --host): not measured." in "\n".join(
        mc_onnx.report_lines({"uncertainty_exported": old, "uncertainty": {}}))
