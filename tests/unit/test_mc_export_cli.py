"""`kdedge export RUN --mc-dropout N`: the MC formats written, checked and recorded; the INT8 MC models pass
their own gate (the parity gate against the fp32 MC model fed the same masks); bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from kdedge.export import onnx_mc
from kdedge.export.ort_session import open_session
from kdedge.export.parity import ParityThresholds, gate_failures, parity
from kdedge.export.qdq_graph import summarise_qdq
from kdedge.stage_model import load_stage_model
from kdedge.run import RunDir
from tests.conftest import TINY_RECIPE, deep_update

pytest.importorskip("onnxruntime")

CNN_TRAIN = {"epochs": 3, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
             "schedule": {"name": "cosine", "warmup_epochs": 0.5}, "augment": False}


def train_teacher(tmp_path: Path, cli, model: dict, train: dict | None = None) -> Path:
    """A run with a finished teacher (`kdedge train`) of `model` (replacing the tiny recipe's); its directory."""
    recipe = deep_update(TINY_RECIPE, {"name": "mc", "output_dir": str(tmp_path / "runs"),
                                       "teacher": {"train": train or {"epochs": 1}}})
    recipe["teacher"]["model"] = model
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = cli("train", path)
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "mc"


def one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("kdedge: error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_mc_dropout_needs_at_least_two_samples(cli, tmp_path):
    assert "--mc-dropout 1" in one_line_error(cli("export", tmp_path / "nowhere", "--mc-dropout", "1"))


def test_mc_dropout_on_a_model_without_dropout_is_one_line_and_writes_nothing(tmp_path, cli):
    run = train_teacher(tmp_path, cli, {"name": "mlp", "widths": [16], "dropout": 0.0})
    line = one_line_error(cli("export", run, "--models", "teacher", "--mc-dropout", "10"))
    assert "teacher" in line and "no dropout" in line and "dropout > 0" in line
    assert not (run / "exports").exists() or not list((run / "exports").rglob("*.onnx"))
    assert not json.loads((run / "manifest.json").read_text()).get("exports")


def test_formats_skip_models_without_dropout_unless_none_has_it():
    from kdedge.errors import KdedgeError
    from kdedge.export.formats import FORMATS, not_applicable_models
    from kdedge.models import build_model

    models = {"teacher": build_model("cnn", in_channels=1, num_classes=3, image_size=8, dropout=0.2),
              "student": build_model("cnn", in_channels=1, num_classes=3, image_size=8)}
    formats = [FORMATS["onnx"], FORMATS["onnx-mc"]]
    skipped = not_applicable_models(formats, list(models), models.__getitem__, None)
    assert list(skipped) == [("onnx-mc", "student")] and "no dropout" in skipped["onnx-mc", "student"]
    with pytest.raises(KdedgeError, match="student: format onnx-mc: no dropout"):
        not_applicable_models(formats, list(models), models.__getitem__, ["teacher", "student"])
    with pytest.raises(KdedgeError, match="no model of the run can have it"):
        not_applicable_models(formats, ["student"], models.__getitem__, None)


@pytest.mark.slow
def test_mc_export_writes_checked_formats_and_the_int8_ones_pass_their_gate(tmp_path, cli):
    run = train_teacher(tmp_path, cli, {"name": "cnn", "channels": [16, 32], "dropout": 0.3}, CNN_TRAIN)
    result = cli("export", run, "--models", "teacher", "--mc-dropout", "10")
    assert result.exit_code == 0, result.output
    exports = json.loads((run / "manifest.json").read_text())["exports"]["teacher"]
    assert {"onnx", "onnx-mc", "onnx-mc-int8"} <= set(exports)
    fp32 = exports["onnx-mc"]
    assert fp32["mc_samples"] == 10 and fp32["mc_dropout_p"] == [0.3] and fp32["mc_split_at"] == "head.dropout"
    assert fp32["vs_torch"]["probs"]["max_abs_diff"] <= 1e-4
    assert "RandomUniformLike" in fp32["ops"] and "Dropout" not in fp32["ops"]

    # the gate, recomputed here: both graphs fed the export's uniforms (fed_batches) on the test split, the
    # MC-averaged predictions against the recorded thresholds; with other uniforms, still close
    model, _ = load_stage_model(RunDir(run), "teacher")
    shapes = onnx_mc.mask_shapes(onnx_mc.mc_model(model, 10), torch.zeros(2, 1, 8, 8))
    from kdedge.data import load_dataset

    ds = load_dataset("digits", [])
    x = ((ds.test.images.float() / 255 - torch.tensor(ds.mean).view(1, -1, 1, 1))
         / torch.tensor(ds.std).view(1, -1, 1, 1)).numpy()
    labels = ds.test.labels.numpy()
    thresholds = ParityThresholds(**fp32["settings"]["parity_thresholds"])
    def fed_probs(path: Path, batches: list) -> np.ndarray:
        session, names = onnx_mc.debug_session(path)
        return np.concatenate([onnx_mc.session_fed(session, b, names, u)[0] for b, u in batches])

    same = list(onnx_mc.fed_batches(x, shapes, 10))
    other = list(onnx_mc.fed_batches(x, shapes, 10, seed=1))
    reference, reference_other = fed_probs(run / fp32["file"], same), fed_probs(run / fp32["file"], other)
    for fmt in ("onnx-mc-int8", "onnx-mc-int8-trt"):
        if fmt not in exports:
            continue  # nvidia-modelopt not installed
        entry = exports[fmt]
        assert entry["parity_failures"] == [] and entry["parity"]["agreement"] >= thresholds.min_agreement
        assert gate_failures(parity(reference, fed_probs(run / entry["file"], same), labels), thresholds) == []
        assert parity(reference_other, fed_probs(run / entry["file"], other), labels).agreement >= 0.98
        # the MC statistics stay fp32: softmax and the reductions have no Q/DQ around them
        graph = onnx.load(str(run / entry["file"])).graph
        producers = {o: n for n in graph.node for o in n.output}
        softmax = next(n for n in graph.node if n.op_type == "Softmax")
        assert producers[softmax.input[0]].op_type != "DequantizeLinear"
        if fmt == "onnx-mc-int8-trt":
            assert summarise_qdq(run / entry["file"]).zero_points_all_zero  # symmetric: what TensorRT takes
        # and the shipped graph runs with random masks: probabilities that sum to 1, entropy >= 0
        probs, entropy, variance, _ = open_session(run / entry["file"]).run(None, {"images": x[:32]})
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
        assert (entropy >= -1e-6).all() and (variance >= 0).all() and variance.max() > 0
