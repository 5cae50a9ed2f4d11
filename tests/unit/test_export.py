"""`kdedge export`: fp32 ONNX checked with onnxruntime, INT8 graphs read back with onnx, the parity gate,
and the one-line errors. Runs on a small real run (sklearn digits, conv teacher and student)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import numpy_helper
from typer.testing import CliRunner

from kdedge.cli import app
from kdedge.models import MODELS, build_model
from tests.conftest import TINY_RECIPE, deep_update

ort = pytest.importorskip("onnxruntime")

CONV_RUN = {
    "name": "exp",
    "teacher": {"model": {"name": "cnn", "channels": [16, 32]},
                "train": {"epochs": 4, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                          "schedule": {"name": "cosine", "warmup_epochs": 0.5}, "augment": False}},
    "student": {"model": {"name": "cnn", "channels": [8, 16]},
                "train": {"epochs": 4, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                          "schedule": {"name": "cosine", "warmup_epochs": 0.5}, "augment": False}},
    "distill": {"losses": [{"name": "hinton", "weight": 1.0, "alpha": 0.5, "temperature": 4.0}], "baseline": True},
}


LOOSE = ("--min-agreement", "0.95", "--max-drop", "0.03")


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    recipe = deep_update(TINY_RECIPE, {"output_dir": str(root / "runs"), **CONV_RUN})
    recipe["teacher"]["model"] = CONV_RUN["teacher"]["model"]  # replace the MLP, do not merge into it
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = invoke("distill", path)
    assert result.exit_code == 0, result.output
    return root / "runs" / "exp"


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "exp"
    shutil.copytree(trained_run, dst)
    return dst


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def digits_test_data():
    from kdedge.data import load_dataset

    ds = load_dataset("digits", [])
    x = (ds.test.images.float() / 255 - torch.tensor(ds.mean).view(1, -1, 1, 1)) / torch.tensor(ds.std).view(1, -1, 1, 1)
    return x, ds.test.labels


# ----------------------------------------------------------------------------------- fp32, every model


# One model of each family in the fast suite (each dynamo export costs seconds); all of them under -m slow.
FAST_MODELS = ("mlp", "cnn", "resnet8", "vgg11", "wrn_16_1")


@pytest.mark.parametrize("name", [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in MODELS.names()])
def test_fp32_onnx_matches_torch_for_every_registered_model(name, tmp_path):
    from kdedge.export.onnx_fp32 import export_onnx

    torch.manual_seed(0)
    kwargs = {"widths": [16]} if name == "mlp" else {}
    model = build_model(name, in_channels=3, num_classes=7, image_size=16, **kwargs).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.randn(2, 3, 16, 16), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 16, 16)
        got = session.run(None, {"images": x.numpy()})[0]
        want = model(x).detach().numpy()
        # untrained deep nets (MobileOne, ResNets) have logits in the thousands, and float32 rounding
        # in the intermediate sums scales with them: compare against the largest logit, not each one
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, atol=1e-5 * scale, rtol=0)
    assert onnx.load(str(path)).opset_import[0].version >= 17


# --------------------------------------------------------------------------------------- the full run


def test_int8_export_writes_checked_artifacts(run_copy):
    # 8x8 digits, 359 test images (one image = 0.28 pt): looser gate than the real-data defaults
    result = invoke("export", run_copy, "--int8", *LOOSE)
    assert result.exit_code == 0, result.output
    exports = manifest(run_copy)["exports"]
    assert set(exports) == {"teacher", "student", "baseline"}
    x, labels = digits_test_data()
    from kdedge.modelfile import load_model

    student, _ = load_model(run_copy / "student" / "model.pt", fix="")
    fp32 = ort.InferenceSession(str(run_copy / "exports/student/model.onnx"), providers=["CPUExecutionProvider"])
    got = fp32.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, student(x).detach().numpy(), atol=1e-4, rtol=0)  # oracle: torch
    for stage, formats in exports.items():
        for name, entry in formats.items():
            path = run_copy / entry["file"]
            import hashlib

            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
            assert entry["input"]["shape"] == ["batch", 1, 8, 8]
            if name != "onnx":  # INT8 agreement with the fp32 ONNX, recomputed here
                int8 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                ref = ort.InferenceSession(str(run_copy / f"exports/{stage}/model.onnx"),
                                           providers=["CPUExecutionProvider"])
                a = int8.run(None, {"images": x.numpy()})[0].argmax(1)
                b = ref.run(None, {"images": x.numpy()})[0].argmax(1)
                assert entry["parity"]["agreement"] == pytest.approx(float((a == b).mean()))
                assert entry["parity"]["accuracy"] == pytest.approx(float((a == labels.numpy()).mean()))
                assert entry["parity"]["agreement"] >= 0.95


def _dq_by_output(graph):
    return {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}


def _value(graph, name):
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _conv_weight_dq(graph):
    """DequantizeLinear nodes that feed a Conv's weight input (directly)."""
    dq = _dq_by_output(graph)
    return [dq[n.input[1]] for n in graph.node if n.op_type == "Conv" and n.input[1] in dq]


def test_ort_int8_graph_has_per_channel_qdq(run_copy):
    assert invoke("export", run_copy, "--format", "onnx-int8", "--models", "student", *LOOSE).exit_code == 0
    graph = onnx.load(str(run_copy / "exports/student/model.int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    weight_dq = _conv_weight_dq(graph)
    assert len(weight_dq) == 2  # both convolutions
    for node, channels in zip(weight_dq, (8, 16)):
        scale = _value(graph, node.input[1])
        assert scale.shape == (channels,)  # one scale per output channel
        assert _value(graph, node.input[2]).dtype == np.int8  # S8 weights
    activation_q = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert any(_value(graph, n.input[2]).dtype == np.uint8 for n in activation_q)  # U8 activations (x86-fast)


def test_tensorrt_form_is_symmetric_int8(run_copy):
    pytest.importorskip("modelopt", reason="nvidia-modelopt not installed (pip install 'kdedge[modelopt]')")
    result = invoke("export", run_copy, "--format", "onnx-int8-trt", "--models", "student", *LOOSE)
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(run_copy / "exports/student/model.int8-trt.onnx")).graph
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) >= 4
    for node in qdq:
        zero_point = _value(graph, node.input[2])
        assert zero_point is not None and zero_point.dtype == np.int8 and not zero_point.any()
    weights = [_value(graph, n.input[1]) for n in _conv_weight_dq(graph)]
    assert weights  # per-channel weight scales for every conv (directly or through a Q/DQ pair)


# ----------------------------------------------------------------------------------------- the gate


def test_parity_gate_refuses_broken_quantization_and_writes_nothing(run_copy, monkeypatch):
    import kdedge.stages.export as stage

    def one_class_two_images(data, count, *, seed):
        # Two images of one class, dimmed to 5 %: activation ranges far too small, so real inputs saturate.
        train = data.training.train
        idx = torch.nonzero(train.labels == 0).flatten()[:2]
        from kdedge.inputs import normalise

        dim = (train.images[idx].float() * 0.05).to(torch.uint8)
        return normalise(dim.numpy(), data.training.stats)

    assert invoke("export", run_copy, "--models", "student").exit_code == 0  # fp32 first
    monkeypatch.setattr(stage, "_calibration_images", one_class_two_images)
    before = manifest(run_copy)["exports"]
    # --max-fp32-layers 0: the plain gate (the fp32 fallback has its own tests in test_export_fallback.py)
    result = invoke("export", run_copy, "--format", "onnx-int8", "--models", "student", "--quantization", "static",
                    "--max-fp32-layers", "0")
    assert result.exit_code == 2
    assert "1 export(s) not written" in result.output and "student onnx-int8: accuracy" in result.output
    assert " fp32 -> " in result.output and "agreement" in result.output
    assert not (run_copy / "exports/student/model.int8.onnx").exists()
    assert not list((run_copy / "exports/student").glob(".*tmp"))
    assert manifest(run_copy)["exports"] == before
    kept = invoke("export", run_copy, "--format", "onnx-int8", "--models", "student", "--quantization", "static",
                  "--max-fp32-layers", "0", "--allow-drop")
    assert kept.exit_code == 0, kept.output
    entry = manifest(run_copy)["exports"]["student"]["onnx-int8"]
    assert entry["allowed_by_flag"] and entry["parity_failures"]


def test_killed_export_leaves_nothing_recorded(run_copy, monkeypatch):
    import kdedge.export.ort_int8 as stage

    assert invoke("export", run_copy, "--models", "student").exit_code == 0

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "quantize_static_qdq", killed)
    result = invoke("export", run_copy, "--format", "onnx-int8", "--models", "student")
    assert result.exit_code != 0
    assert "interrupted; finished results are kept" in result.output and "--resume" not in result.output
    assert "onnx-int8" not in manifest(run_copy)["exports"]["student"]
    assert sorted(p.name for p in (run_copy / "exports/student").iterdir()) == ["model.onnx"]


def test_reexport_is_reused_and_other_settings_need_force(run_copy):
    assert invoke("export", run_copy, "--int8", "--models", "student", *LOOSE).exit_code == 0
    sha = manifest(run_copy)["exports"]["student"]["onnx-int8"]["sha256"]
    again = invoke("export", run_copy, "--int8", "--models", "student", *LOOSE)
    assert again.exit_code == 0 and "up to date" in again.output
    other = invoke("export", run_copy, "--int8", "--models", "student", "--calib-method", "percentile", *LOOSE)
    assert other.exit_code == 2 and "--force" in other.output
    forced = invoke("export", run_copy, "--int8", "--models", "student", "--calib-method", "percentile", "--force", *LOOSE)
    assert forced.exit_code == 0, forced.output
    entry = manifest(run_copy)["exports"]["student"]["onnx-int8"]
    assert entry["settings"]["calib_method"] == "percentile" and entry["sha256"] != sha


def test_linear_only_model_gets_dynamic_quantization(tmp_path, make_recipe):
    recipe = make_recipe({"student": {"model": {"name": "mlp", "widths": [16]}, "train": TINY_RECIPE["teacher"]["train"]},
                          "distill": {"losses": [{"name": "hinton", "weight": 1.0}], "baseline": False}})
    assert invoke("distill", recipe).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    result = invoke("export", run, "--int8")
    assert result.exit_code == 0, result.output
    entry = manifest(run)["exports"]["student"]["onnx-int8"]
    assert entry["quantization"] == "dynamic"
    ops = {n.op_type for n in onnx.load(str(run / entry["file"])).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops


# ---------------------------------------------------------------------------------------- bad input


def test_wrong_format_name_lists_the_valid_ones(run_copy):
    result = invoke("export", run_copy, "--format", "tflite")
    assert result.exit_code == 2
    assert "onnx-int8" in result.output and "engine" in result.output and "Traceback" not in result.output


def test_missing_run_dir(tmp_path):
    result = invoke("export", tmp_path / "nope", "--int8")
    assert result.exit_code == 2 and "not a kdedge run directory" in result.output


def test_run_without_student(tmp_path, make_recipe):
    assert invoke("train", make_recipe()).exit_code == 0
    result = invoke("export", tmp_path / "runs" / "tiny", "--int8")
    assert result.exit_code == 2 and "no finished student" in result.output and "kdedge distill" in result.output
    assert not (tmp_path / "runs" / "tiny" / "exports").exists()


def test_corrupt_onnx_is_one_line_error(tmp_path):
    from kdedge.errors import KdedgeError
    from kdedge.export.ort_session import open_session

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(KdedgeError, match="not a loadable ONNX model"):
        open_session(bad)


def test_corrupted_export_is_not_trusted(run_copy):
    assert invoke("export", run_copy, "--models", "student").exit_code == 0
    (run_copy / "exports/student/model.onnx").write_bytes(b"garbage")
    result = invoke("export", run_copy, "--models", "student")
    assert result.exit_code == 2 and "--force" in result.output
    assert invoke("export", run_copy, "--models", "student", "--force").exit_code == 0


def test_engine_without_tensorrt_says_how_to_install(run_copy):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; the message is for machines without it")
    except ImportError:
        pass
    result = invoke("export", run_copy, "--format", "engine")
    assert result.exit_code == 2 and "pypi.nvidia.com" in result.output and "JetPack" in result.output


def test_engine_builds_and_passes_the_gate_on_a_gpu(run_copy):
    pytest.importorskip("tensorrt", reason="TensorRT not installed (NVIDIA's index or JetPack only)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: TensorRT engines are built on the GPU that runs them")
    result = invoke("export", run_copy, "--format", "engine", "--models", "student")
    assert result.exit_code == 0, result.output
    entry = manifest(run_copy)["exports"]["student"]["engine"]
    assert entry["parity"]["agreement"] >= 0.99 and entry["tensorrt"]
