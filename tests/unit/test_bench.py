"""`kdedge bench` on a small real run (digits, CNN teacher and student, exported): the report's numbers
against independent computations (onnxruntime sessions, torch, torchmetrics) and the one-line errors."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TINY_RECIPE, deep_update
from tests.unit.test_export import CONV_RUN, LOOSE, invoke

ort = pytest.importorskip("onnxruntime")
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
RUNTIMES = {"torch", "ort", "ort-int8"} | ({"openvino", "openvino-int8"} if HAS_OPENVINO else set())


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    conv = copy.deepcopy(CONV_RUN)  # other modules share CONV_RUN's sub-dicts: nothing of theirs leaks in
    recipe = deep_update(TINY_RECIPE, {"output_dir": str(root / "runs"), **conv, "name": "b"})
    recipe["teacher"]["model"] = conv["teacher"]["model"]
    recipe["distill"]["baseline"] = True  # KD vs baseline is part of the report
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert invoke("distill", path).exit_code == 0
    run = root / "runs" / "b"
    result = invoke("export", run, "--int8", "--models", "teacher,student,baseline", *LOOSE, "--allow-drop")
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
    assert r["schema"] == "kdedge-bench-report-3"
    assert set(r["models"]) == {"teacher", "student", "baseline"}
    for info in r["models"].values():
        assert set(info["runtimes"]) == RUNTIMES
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
    assert json.loads(printed)["schema"] == "kdedge-bench-report-3"


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
    for stage in ("teacher", "student", "baseline"):
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


# --- what a person decides from: recommendation, KD vs baseline, files, stability, OpenVINO ---------------

def test_report_json_carries_the_decision_fields(exported_run):
    from kdedge.bench.kd_gain import paired_bootstrap
    from kdedge.io import sha256_file

    r = report(exported_run)
    manifest = json.loads((exported_run / "manifest.json").read_text())
    rec = r["recommendation"]
    assert rec["limits"]["max_drop"] == 1.0 and rec["limits"]["budget_batch"] == 1
    teacher = r["models"]["teacher"]["runtimes"]["torch"]["accuracy"]
    assert rec["limits"]["min_accuracy"] == pytest.approx(teacher - 0.01)
    pick = rec["choice"] or rec["closest"]
    assert pick["model"] in r["models"] and pick["runtime"] in r["models"][pick["model"]]["runtimes"]
    if rec["choice"]:  # the pick is the fastest of those that meet the limit (ties: the more accurate)
        meeting = [(s, rt, e["batch1"]["median_ms"]) for s, i in r["models"].items() for rt, e in i["runtimes"].items()
                   if e["accuracy"] >= rec["limits"]["min_accuracy"] - 1e-12]
        assert rec["choice"]["latency_ms"] <= min(ms for *_, ms in meeting) + 1e-12 or rec["notes"]
    for stage, info in r["models"].items():
        for runtime, e in info["runtimes"].items():
            path = exported_run / e["file"]
            assert e["sha256"] == sha256_file(path) and "timing_flags" in e and "spread" in e["batch1"]
            assert e["precision"] == ("int8" if runtime.endswith("-int8") else "fp32")
            if runtime != "torch":
                fmt = "onnx-int8" if runtime.endswith("-int8") else "onnx"
                recorded = manifest["exports"][stage][fmt]
                assert e["export"]["settings"] == recorded["settings"] and e["sha256"] == recorded["sha256"]
                assert e["export"]["allowed_by_flag"] == recorded["allowed_by_flag"]
    # the KD comparison: recomputed from the torch models' own predictions
    from kdedge.modelfile import load_model

    x, labels = digits_test()
    correct = {}
    for stage in ("student", "baseline"):
        model, _ = load_model(exported_run / stage / "model.pt", fix="")
        correct[stage] = (model.eval()(torch.from_numpy(x)).argmax(1) == labels).numpy()
    kd = r["kd_vs_baseline"]
    expected = paired_bootstrap(correct["student"], correct["baseline"])
    assert kd["runtime"] == "torch" and kd["difference"] == pytest.approx(expected["difference"])
    assert (kd["low"], kd["high"], kd["verdict"]) == (expected["low"], expected["high"], expected["verdict"])
    md = (exported_run / "bench" / "report.md").read_text()
    assert md.index("## What to ship") < md.index("## Models × runtimes")
    assert kd["verdict"] in md and (exported_run / "bench" / "tradeoff.png").is_file()


def test_gate_failures_and_unstable_timings_are_marked_in_every_table(exported_run, tmp_path):
    from kdedge.bench.report import rows, write_markdown

    r = report(exported_run)
    entry = r["models"]["student"]["runtimes"]["ort-int8"]
    entry["export"] = {**entry["export"], "allowed_by_flag": True, "parity_failures": ["agreement 90.00% < 99.00%"]}
    entry["timing_flags"] = ["batch 1: p90/median 2.00 (> 1.5)"]
    r["timing_notes"] = ["student on ort-int8: batch 1: p90/median 2.00 (> 1.5)"]
    r["calibration"]["temperature_check"] = {"test_ece_before": 0.02, "test_ece_after": 0.05, "worse": True}
    md = write_markdown(r, tmp_path).read_text()
    assert any(row[:2] == ["student", "ort-int8 †"] for row in rows(r))  # the models × runtimes table
    assert "| student | ort-int8 † |" in md.split("## Teacher / student")[1]  # the ratio table too
    assert "failed the parity gate" in md and "agreement 90.00% < 99.00%" in md
    assert "⚠" in md and "quiet machine" in md
    assert "made test calibration worse" in md and "0.0200 to 0.0500" in md


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (pip install 'kdedge[openvino]')")
def test_openvino_logits_match_onnxruntime_on_the_same_files(exported_run):
    from kdedge.bench.openvino_runtime import OpenVinoPredictor

    x, labels = digits_test()
    r = report(exported_run)
    for stage in ("teacher", "student"):
        fp32 = exported_run / f"exports/{stage}/model.onnx"
        ov = OpenVinoPredictor(fp32, threads=1, input_shape=(1, 8, 8))
        want = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        got = ov(x)
        assert abs(got - want).max() <= 1e-4
        assert ov.report()["openvino"]["inference_num_threads"] == 1
        assert ov.report()["openvino"]["inference_precision"] == "f32"
        # INT8: two runtimes' own integer kernels (rounding of requantization differs): predictions agree on
        # at least 99 % of the test images
        int8 = exported_run / f"exports/{stage}/model.int8.onnx"
        ov8 = OpenVinoPredictor(int8, threads=2, input_shape=(1, 8, 8))
        assert ov8.report()["openvino"]["inference_num_threads"] == 2  # --threads honoured
        want8 = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        got8 = ov8(x)
        assert (got8.argmax(1) == want8.argmax(1)).mean() >= 0.99
        # the report's numbers are OpenVINO's own
        assert r["models"][stage]["runtimes"]["openvino"]["accuracy"] == pytest.approx(
            float((got.argmax(1) == labels.numpy()).mean()))
        assert r["models"][stage]["runtimes"]["openvino-int8"]["accuracy"] == pytest.approx(
            float((got8.argmax(1) == labels.numpy()).mean()))
    assert r["versions"]["openvino"] and r["models"]["student"]["runtimes"]["openvino"]["openvino"]["version"]


def test_openvino_absent_is_named_when_asked_and_left_out_otherwise(exported_run, monkeypatch):
    import importlib.util

    from kdedge.bench.runtimes import parse_runtimes

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert not {r.name for r in parse_runtimes(None, "cpu")} & {"openvino", "openvino-int8"}
    result = invoke("bench", exported_run, "--runtime", "openvino-int8")
    assert result.exit_code == 2 and "kdedge[openvino]" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (("--max-drop", "-1"), "--max-drop -1: accuracy points"),
    (("--max-drop", "nan"), "--max-drop nan"),
    (("--max-ece", "0"), "--max-ece 0: an expected calibration error"),
    (("--max-ece", "1.5"), "--max-ece 1.5"),
    (("--budget-ms", "0"), "--budget-ms 0: a latency"),
    (("--budget-batch", "0"), "--budget-batch 0: a batch size"),
    (("--threads", "0"), "--threads 0: at least 1"),
])
def test_bad_limits_are_one_line_errors(exported_run, args, message):
    before = sorted(p.name for p in (exported_run / "bench").iterdir())
    result = invoke("bench", exported_run, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = [ln for ln in result.output.splitlines() if ln.strip()]
    assert line.startswith("kdedge: error: ") and message in line
    assert sorted(p.name for p in (exported_run / "bench").iterdir()) == before  # nothing written


def test_limits_reach_the_report_and_the_terminal_ends_with_the_recommendation(exported_run, tmp_path):
    dst = tmp_path / "lim"
    shutil.copytree(exported_run, dst)
    result = invoke("bench", dst, "--runtime", "ort,ort-int8", "--runs", "1", "--mc-samples", "0",
                    "--max-drop", "50", "--max-ece", "0.9", "--budget-ms", "1000", "--budget-batch", "8")
    assert result.exit_code == 0, result.output
    r = report(dst)
    rec = r["recommendation"]
    assert rec["limits"] | {"max_drop": 50.0, "max_ece": 0.9, "budget_ms": 1000.0, "budget_batch": 8} == rec["limits"]
    assert all("batch8" in e for i in r["models"].values() for e in i["runtimes"].values())  # the budget's batch
    assert rec["choice"]["batch"] == 8 and r["threads"] == 1  # default: one thread
    fastest = min((e["batch8"]["median_ms"], s, rt) for s, i in r["models"].items() for rt, e in i["runtimes"].items()
                  if not (rt == "ort-int8" and e["batch8"]["median_ms"] >= i["runtimes"]["ort"]["batch8"]["median_ms"]))
    assert (rec["choice"]["model"], rec["choice"]["runtime"]) == fastest[1:]
    flat = " ".join(result.output.split())
    assert flat.endswith(" ".join(" ".join(rec["lines"]).split()))
