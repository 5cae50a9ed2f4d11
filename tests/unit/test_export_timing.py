"""Timing a run's recorded exports against each other (bench/ratio.py, bench/int8_speedup.py): the
accuracy it reports is the exported file's own, recomputed here with an onnxruntime session; every
session is timed the asked number of times; a missing or changed export is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from kdedge.errors import KdedgeError
from kdedge.run import RunDir
from tests.conftest import TINY_RECIPE, deep_update
from tests.unit.test_export import CONV_RUN, invoke

ort = pytest.importorskip("onnxruntime")
PICKS = {"teacher fp32": ("teacher", "onnx"), "student fp32": ("student", "onnx")}


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("timing")
    recipe = deep_update(TINY_RECIPE, {"output_dir": str(root / "runs"), **CONV_RUN, "name": "t"})
    recipe["teacher"]["model"] = CONV_RUN["teacher"]["model"]
    # a new dict: deep_update shares CONV_RUN's sub-dicts the base lacks, and test_bench reads its baseline
    recipe["distill"] = {**CONV_RUN["distill"], "baseline": False}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert invoke("distill", path).exit_code == 0
    run = root / "runs" / "t"
    result = invoke("export", run, "--format", "onnx")
    assert result.exit_code == 0, result.output
    return RunDir(run)


def ort_accuracy(path) -> float:
    from kdedge.data import load_dataset

    ds = load_dataset("digits", [])
    x = (ds.test.images.float() / 255 - np.float32(ds.mean[0])) / np.float32(ds.std[0])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(np.float32)})[0]
    return float((logits.argmax(1) == ds.test.labels.numpy()).mean())


def test_times_every_export_and_reports_its_own_accuracy(fp32_run):
    from bench.export_timing import time_exports

    result = time_exports(fp32_run, PICKS, threads=1, batches=(8, 1), rounds=2, runs=3)
    assert set(result) == set(PICKS)
    for key, (model, fmt) in PICKS.items():
        entry = result[key]
        assert (entry["model"], entry["format"]) == (model, fmt)
        assert entry["accuracy"] == pytest.approx(ort_accuracy(fp32_run.root / entry["file"]), abs=1e-9)
        for batch in (8, 1):
            timing = entry[f"batch{batch}"]
            assert timing["runs"] == 6 and timing["batch"] == batch
            assert 0 < timing["p10_ms"] <= timing["median_ms"] <= timing["p90_ms"]


def test_missing_and_changed_exports_are_one_line_errors(fp32_run, tmp_path):
    from bench.export_timing import time_exports

    with pytest.raises(KdedgeError, match=r"no onnx-int8 export of student; run `kdedge export"):
        time_exports(fp32_run, {"s": ("student", "onnx-int8")}, threads=1, rounds=1, runs=1)
    path = fp32_run.root / "exports" / "student" / "model.onnx"
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\0")
        with pytest.raises(KdedgeError, match="changed since `kdedge export` recorded it") as info:
            time_exports(fp32_run, PICKS, threads=1, rounds=1, runs=1)
        assert "\n" not in str(info.value)
    finally:
        path.write_bytes(original)


def test_call_floor_graph_only_flattens_and_slices(tmp_path):
    from bench.export_timing import write_call_floor_model

    path = write_call_floor_model(tmp_path / "floor.onnx", (1, 8, 8), 10)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    (out,) = session.run(None, {"input": x})
    np.testing.assert_array_equal(out, x.reshape(5, -1)[:, :10])


def test_call_floor_is_timed_with_the_exports(fp32_run):
    from bench.export_timing import CALL_FLOOR, time_exports

    result = time_exports(fp32_run, PICKS, threads=1, batches=(8, 1), rounds=2, runs=3, call_floor=True)
    assert set(result) == {*PICKS, CALL_FLOOR}
    assert result[CALL_FLOOR]["accuracy"] is None and result[CALL_FLOOR]["batch8"]["runs"] == 6
