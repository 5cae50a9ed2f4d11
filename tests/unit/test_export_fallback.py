"""INT8 that survives: the fp32 fallback of `kdedge export` on a depthwise student, the refusals listed
after every model was tried, and the preprocessing written into each ONNX file.

The student is built here (depthwise separable convolutions, hard-swish, squeeze-excite, a channel
shuffle), trained briefly on digits, then given an outlier channel: one channel of the depthwise
block's output scaled by OUTLIER and the next pointwise conv's weights for it divided by the same, so
fp32 computes the same function but per-tensor INT8 of that activation loses every other channel (the
way MobileNets break under INT8). It stands in for the run's student (load_stage_model patched)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from torch import nn

from kdedge.data import load_dataset
from tests.conftest import TINY_RECIPE, deep_update
from tests.unit.test_export import LOOSE, invoke

ort = pytest.importorskip("onnxruntime")
OUTLIER = 300.0
EPOCHS = 10
OUTLIER_BLOCKS = {"dw", "pw"}  # the block that makes the outlier channel and the one that reads it


class _Shuffle(nn.Module):
    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.Hardswish())
        self.se, self.shuffle = _SqueezeExcite(32), _Shuffle()
        self.dw2 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, stride=2), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.shuffle(self.se(self.pw(self.dw(self.stem(x)))))
        return self.head(self.dw2(x).mean((2, 3)))


def _digits():
    ds = load_dataset("digits", [])
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    return ds, lambda images: (images.float() / 255 - mean) / std


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    """{"healthy": trained net, "outlier": the same function with an outlier channel}."""
    torch.manual_seed(0)
    ds, norm = _digits()
    x, y = norm(ds.train.images), ds.train.labels
    net = DepthwiseNet()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    outlier = copy.deepcopy(net)
    with torch.no_grad():
        outlier.dw[1].weight[0] *= OUTLIER
        outlier.dw[1].bias[0] *= OUTLIER
        outlier.pw[0].weight[:, 0] /= OUTLIER
        test = norm(ds.test.images)
        # the same function in fp32 (the oracle the construction relies on)
        assert (outlier(test).argmax(1) == net(test).argmax(1)).float().mean() > 0.99
    return {"healthy": net, "outlier": outlier}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fallback")
    recipe = deep_update(TINY_RECIPE, {"output_dir": str(root / "runs"), "name": "fb",
                                       "student": {"model": {"name": "mlp", "widths": [16]},
                                                   "train": TINY_RECIPE["teacher"]["train"]},
                                       "distill": {"losses": [{"name": "hinton", "weight": 1.0}], "baseline": True}})
    recipe["teacher"]["train"]["epochs"] = 1
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = invoke("distill", path)
    assert result.exit_code == 0, result.output
    return root / "runs" / "fb"


@pytest.fixture
def run(tiny_run, tmp_path, nets, monkeypatch) -> Path:
    """A copy of the run whose student is the outlier net and whose baseline is the healthy one."""
    import shutil

    import kdedge.stages.export as stage

    dst = tmp_path / "fb"
    shutil.copytree(tiny_run, dst)
    real = stage.load_stage_model

    def load(run_dir, name, **kwargs):
        model, spec = real(run_dir, name, **kwargs)
        swap = {"student": nets["outlier"], "baseline": nets["healthy"]}.get(name)
        return (copy.deepcopy(swap), spec) if swap is not None else (model, spec)

    monkeypatch.setattr(stage, "load_stage_model", load)
    return dst


def exports(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text()).get("exports", {})


def ort_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _weight_is_float(graph: onnx.GraphProto, node_name: str) -> bool:
    """The node's weight is a float initializer, not the output of a DequantizeLinear: kept in fp32."""
    node = next(n for n in graph.node if n.name == node_name)
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return node.input[1] in floats


def test_fallback_keeps_the_outlier_layers_in_fp32_and_passes(run):
    formats = "onnx-int8"
    try:
        import modelopt.torch.quantization  # noqa: F401
        formats += ",onnx-int8-trt"
    except ImportError:
        pass
    # the 8x8-digits gate of test_export (359 test images, one is 0.28 pt; the healthy net's own INT8 noise is
    # about 1 %): the plain INT8 of the outlier net is far below it, at ~25 % agreement
    result = invoke("export", run, "--format", formats, "--models", "student", "--max-fp32-layers", "3", *LOOSE)
    assert result.exit_code == 0, result.output
    entry = exports(run)["student"]["onnx-int8"]
    fallback = entry["fp32_fallback"]
    ds, norm = _digits()
    x, labels = norm(ds.test.images), ds.test.labels.numpy()
    # the plain INT8 failed the default gate; the fallback passes it
    assert fallback["before"]["agreement"] < 0.9 and fallback["before_failures"]
    assert fallback["passed"] and not entry["parity_failures"] and not entry["allowed_by_flag"]
    # recomputed from the files: agreement of the kept INT8 with the fp32 ONNX, and its accuracy
    kept = ort_logits(run / entry["file"], x).argmax(1)
    ref = ort_logits(run / "exports/student/model.onnx", x).argmax(1)
    assert entry["parity"]["agreement"] == pytest.approx(float((kept == ref).mean())) and (kept == ref).mean() >= 0.95
    assert entry["parity"]["accuracy"] == pytest.approx(float((kept == labels).mean()))
    # the layers kept are the outlier's, ranked on the validation split, and are fp32 in the graph
    layers = fallback["layers"]
    assert 1 <= len(layers) <= 3 and entry["fp32_layers"] == [s["name"] for s in layers]
    # (an ONNX Conv with its BatchNorm folded in is named after either module: dw.0 or dw.1)
    assert OUTLIER_BLOCKS <= {s["module"].split(".")[0] for s in layers}
    assert fallback["held_out"]["split"] == "val"
    graph = onnx.load(str(run / entry["file"])).graph
    for s in layers:
        if s["op"] == "Conv":
            assert _weight_is_float(graph, s["name"])
    quantized_convs = [n for n in graph.node if n.op_type == "Conv" and not _weight_is_float(graph, n.name)]
    assert quantized_convs  # the rest stays INT8 (depthwise and squeeze-excite convs among them)
    speed = fallback["speed"]
    assert speed["measured"] and set(speed["median_ms"]) == {"fp32", "int8", "int8_fallback"}
    assert entry["settings"]["max_fp32_layers"] == 3
    print("ORT fallback:", fallback["before"]["agreement"], "->", fallback["after"]["agreement"],
          [s["name"] for s in layers], speed["median_ms"])
    if "onnx-int8-trt" in formats:
        trt = exports(run)["student"]["onnx-int8-trt"]
        assert trt["qdq"]["zero_points_all_zero"] and trt["qdq"]["quantize_nodes"] > 0  # TensorRT's Q/DQ rules
        assert "pw.0" in trt["fp32_layers"] and trt["fp32_fallback"]["passed"]
        print("TensorRT form fallback:", trt["fp32_fallback"]["before"]["agreement"], "->",
              trt["parity"]["agreement"], trt["fp32_layers"])


def test_budget_too_small_is_refused_with_the_numbers_and_the_others_are_kept(run):
    result = invoke("export", run, "--format", "onnx-int8", "--models", "student,baseline", "--max-fp32-layers", "1",
                    *LOOSE)
    assert result.exit_code == 2, result.output
    listed = result.output.split("export(s) not written")[1].splitlines()[1:]
    lines = [line for line in listed if line.strip()]
    assert len(lines) == 1 and lines[0].strip().startswith("student onnx-int8: accuracy"), result.output
    ds, norm = _digits()
    x, labels = norm(ds.test.images), ds.test.labels.numpy()
    fp32_acc = float((ort_logits(run / "exports/student/model.onnx", x).argmax(1) == labels).mean())
    assert f"accuracy {fp32_acc:.4f} fp32 -> " in lines[0] and "agreement" in lines[0]
    assert "with 1 layer(s) in fp32" in lines[0] and "--max-fp32-layers" in lines[0]
    # nothing of the refused artifact; the fp32 reference and the next model's INT8 are recorded
    assert not (run / "exports/student/model.int8.onnx").exists()
    assert not [p for p in (run / "exports/student").iterdir() if p.name.startswith(".")]
    recorded = exports(run)
    assert "onnx-int8" not in recorded["student"] and "onnx" in recorded["student"]
    assert recorded["baseline"]["onnx-int8"]["parity"]["agreement"] >= 0.95


def test_export_goes_on_past_a_refusal_and_lists_every_one(run):
    # budget 0: today's refusal, for both the student (first) and nothing else; the teacher and baseline after it
    result = invoke("export", run, "--format", "onnx-int8", "--max-fp32-layers", "0", *LOOSE)
    assert result.exit_code == 2, result.output
    assert "1 export(s) not written" in result.output
    assert "allow fp32 layers with --max-fp32-layers N" in result.output
    recorded = exports(run)
    assert set(recorded) == {"teacher", "student", "baseline"}
    assert "onnx-int8" in recorded["baseline"] and "onnx-int8" in recorded["teacher"]
    assert "onnx-int8" not in recorded["student"]


def test_every_onnx_file_says_how_to_feed_it(run):
    import hashlib

    result = invoke("export", run, "--format", "onnx-int8", "--models", "baseline", *LOOSE)
    assert result.exit_code == 0, result.output
    ds, _ = _digits()
    for name, entry in exports(run)["baseline"].items():
        path = run / entry["file"]
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["kdedge.mean"]) == pytest.approx(list(ds.mean))
        assert json.loads(props["kdedge.std"]) == pytest.approx(list(ds.std))
        assert json.loads(props["kdedge.classes"]) == list(ds.classes)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert props["kdedge.input_name"] == session.get_inputs()[0].name
        assert json.loads(props["kdedge.input_shape"]) == ["batch", *ds.train.images.shape[1:]]
        assert props["kdedge.model_stage"] == "baseline" and props["kdedge.export_format"] == name
        assert props["kdedge.layout"] == "NCHW" and "mean" in props["kdedge.normalisation"]
        # the checksum recorded (and checked by `kdedge bench`) is of the file with its metadata
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    again = invoke("export", run, "--format", "onnx-int8", "--models", "baseline", *LOOSE)
    assert again.exit_code == 0 and "up to date" in again.output
