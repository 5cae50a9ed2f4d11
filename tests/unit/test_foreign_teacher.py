"""A teacher trained elsewhere (state_dict, torch.export program, ONNX file) read into a run: its logits
are the original model's (torch as the oracle), it is evaluated on load, and every bad file or contract
is one line, exit 2, with no run written."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from kdedge.data import load_dataset
from kdedge.errors import KdedgeError
from kdedge.models import build_model
from kdedge.teachers.checkpoint import load_weights, read_state_dict
from kdedge.teachers.exported import load_exported
from kdedge.teachers.onnx_model import OnnxTeacher, self_contained_onnx

TEACHER_ARCH = {"name": "cnn"}


@pytest.fixture(scope="module")
def own_teacher(tmp_path_factory):
    """A small CNN trained on digits by a plain loop (not kdedge), saved the three ways a user brings it."""
    out = tmp_path_factory.mktemp("own_teacher")
    data = load_dataset("digits", [])
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = (data.train.images.float() / 255 - mean) / std
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(8):
        model.train()
        for idx in torch.randperm(len(x)).split(128):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), data.train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    x_test = (data.test.images.float() / 255 - mean) / std
    with torch.no_grad():
        logits = model(x_test)
    # as DataParallel saves it, inside a training checkpoint
    torch.save({"epoch": 8, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               out / "weights.pt")
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (x_test[:4],), dynamic_shapes=({0: batch},)), out / "teacher.pt2")
    torch.onnx.export(model, (x_test[:4],), str(out / "teacher.onnx"), input_names=["input"], output_names=["out"],
                      dynamo=True, dynamic_shapes=({0: batch},))
    accuracy = (logits.argmax(1) == data.test.labels).double().mean().item()
    return {"dir": out, "model": model, "x_test": x_test, "logits": logits, "accuracy": accuracy,
            "mean": list(data.mean), "std": list(data.std)}


def _recipe(tmp_path: Path, teacher: dict, **extra) -> Path:
    recipe = {"name": "own", "device": "cpu", "output_dir": str(tmp_path / "runs"), "data": {"dataset": "digits"},
              "teacher": teacher, "student": {"model": {"name": "mlp", "widths": [16]},
                                              "train": {"epochs": 1, "augment": False}},
              "distill": {"losses": [{"name": "hinton", "temperature": 4.0}], "baseline": False}, **extra}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


SOURCES = {
    "checkpoint": lambda d: {"checkpoint": str(d / "weights.pt"), "model": TEACHER_ARCH},
    "exported": lambda d: {"exported": str(d / "teacher.pt2")},
    "onnx": lambda d: {"onnx": str(d / "teacher.onnx")},
}


def test_each_form_gives_the_original_logits(own_teacher):
    d, x = own_teacher["dir"], own_teacher["x_test"]
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8)
    loaded = load_weights(model, read_state_dict(d / "weights.pt", (d / "weights.pt").read_bytes()),
                          d / "weights.pt", "cnn")
    exported = load_exported(d / "teacher.pt2", (d / "teacher.pt2").read_bytes())
    onnx_teacher = OnnxTeacher(d / "teacher.onnx", self_contained_onnx(d / "teacher.onnx"))
    with torch.no_grad():
        assert torch.equal(loaded(x), own_teacher["logits"])  # the same weights: bitwise
        assert (exported.eval()(x) - own_teacher["logits"]).abs().max() < 1e-4
        assert (onnx_teacher.eval()(x) - own_teacher["logits"]).abs().max() < 1e-4
    assert exported.input_shape == (None, 1, 8, 8) and onnx_teacher.input_shape == (None, 1, 8, 8)
    # torch wrote the ONNX weights beside it (teacher.onnx.data): the run keeps one self-contained file
    assert (d / "teacher.onnx.data").exists()


@pytest.mark.parametrize("kind", list(SOURCES))
def test_distill_from_own_teacher_evaluates_it_on_load(kind, own_teacher, tmp_path, cli):
    recipe = _recipe(tmp_path, {**SOURCES[kind](own_teacher["dir"]),
                                "input": {"channels": 1, "image_size": 8, "num_classes": 10,
                                          "mean": own_teacher["mean"], "std": own_teacher["std"]}})
    result = cli("distill", recipe)
    assert result.exit_code == 0, result.stderr
    assert "read correctly? test accuracy" in result.stdout
    run = tmp_path / "runs" / "own"
    record = json.loads((run / "manifest.json").read_text())["stages"]["teacher"]
    assert abs(record["test"]["accuracy"] - own_teacher["accuracy"]) < 1e-6
    assert record["source"]["kind"] == kind and record["status"] == "complete"
    assert json.loads((run / "manifest.json").read_text())["stages"]["student"]["status"] == "complete"
    kept = run / "teacher" / {"checkpoint": "model.pt", "exported": "model.pt2", "onnx": "model.onnx"}[kind]
    assert kept.is_file()
    # a rerun reuses it; other bytes under the same file name are another teacher (--force to replace)
    again = cli("distill", recipe)
    assert again.exit_code == 0 and "reusing the finished teacher" in again.stdout


def test_changed_teacher_file_is_not_reused(own_teacher, tmp_path, cli):
    weights = tmp_path / "w.pt"
    weights.write_bytes((own_teacher["dir"] / "weights.pt").read_bytes())
    recipe = _recipe(tmp_path, {"checkpoint": "w.pt", "model": TEACHER_ARCH})  # relative to the recipe file
    assert cli("distill", recipe).exit_code == 0
    state = {k: v + 1 if v.is_floating_point() else v for k, v in own_teacher["model"].state_dict().items()}
    torch.save(state, weights)
    result = cli("distill", recipe)
    assert result.exit_code == 2 and "--force" in result.stderr and "Traceback" not in result.output


def _assert_refused(cli, recipe: Path, *needles: str) -> None:
    result = cli("distill", recipe)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output, line
    for needle in needles:
        assert needle in line, line
    assert not (recipe.parent / "runs" / "own").exists()  # nothing written


def test_checkpoint_mismatch_names_keys_and_shapes(own_teacher, tmp_path, cli):
    _assert_refused(cli, _recipe(tmp_path, {"checkpoint": str(own_teacher["dir"] / "weights.pt"),
                                            "model": {"name": "cnn", "channels": [16, 32]}}),
                    "does not fit model 'cnn'", "shape file vs model", "weights.pt")
    _assert_refused(cli, _recipe(tmp_path, {"checkpoint": str(own_teacher["dir"] / "weights.pt"),
                                            "model": {"name": "mlp"}}), "missing", "unexpected")


def test_pickled_whole_model_is_refused_unread(own_teacher, tmp_path, cli):
    path = tmp_path / "whole.pt"
    torch.save(own_teacher["model"], path)  # the whole module: unpickling it would run code
    _assert_refused(cli, _recipe(tmp_path, {"checkpoint": str(path), "model": TEACHER_ARCH}),
                    "pickled Python objects", "state_dict")


def test_pt2_with_pickled_objects_is_refused(own_teacher, tmp_path):
    source = (own_teacher["dir"] / "teacher.pt2").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(buffer, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("teacher/data/constants/custom_obj_0", b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(KdedgeError, match="pickled Python objects"):
        load_exported(tmp_path / "evil.pt2", buffer.getvalue())


@pytest.mark.parametrize("teacher_input, needles", [
    ({"channels": 3}, ["teacher.input.channels", "3 channels"]),
    ({"image_size": 32}, ["teacher.input.image_size", "data.image_size: 32"]),
    ({"num_classes": 100}, ["teacher.input.num_classes", "100 classes"]),
    ({"classes": [str(i) for i in range(9, -1, -1)]}, ["teacher.input.classes", "output order"]),
    ({"mean": [0.5], "std": [0.25]}, ["teacher.input.mean", "data.mean"]),
])
def test_contract_mismatch_is_one_line(teacher_input, needles, own_teacher, tmp_path, cli):
    _assert_refused(cli, _recipe(tmp_path, {"onnx": str(own_teacher["dir"] / "teacher.onnx"), "input": teacher_input}),
                    *needles)


def test_teacher_that_does_not_fit_the_data_is_refused(tmp_path, cli):
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=16).eval()
    x = torch.zeros(2, 1, 16, 16)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "t16.pt2")  # static 2x1x16x16
    _assert_refused(cli, _recipe(tmp_path, {"exported": "t16.pt2"}), "teacher.exported takes inputs of 1x16x16",
                    "1x8x8")
    five = build_model("cnn", in_channels=1, num_classes=5, image_size=8).eval()
    torch.export.save(torch.export.export(five, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)), tmp_path / "t5.pt2")
    _assert_refused(cli, _recipe(tmp_path, {"exported": "t5.pt2"}), "returns [2, 5]", "not [2, 10]")


def test_damaged_files_are_one_line(tmp_path, cli):
    (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx")
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "empty.pt").write_bytes(b"")
    _assert_refused(cli, _recipe(tmp_path, {"onnx": "junk.onnx"}), "junk.onnx", "teacher.onnx")
    _assert_refused(cli, _recipe(tmp_path, {"exported": "junk.pt2"}), "junk.pt2", "teacher.exported")
    _assert_refused(cli, _recipe(tmp_path, {"checkpoint": "empty.pt", "model": TEACHER_ARCH}), "empty.pt")
    _assert_refused(cli, _recipe(tmp_path, {"onnx": "missing.onnx"}), "teacher.onnx", "does not exist")


@pytest.mark.parametrize("teacher, extra, needle", [
    ({"onnx": "t.onnx", "exported": "t.pt2"}, {}, "give one teacher source"),
    ({"exported": "t.pt2", "model": {"name": "cnn"}}, {}, "remove teacher.model"),
    ({"checkpoint": "w.pt"}, {}, "checkpoint needs model"),
    ({"onnx": "t.onnx"}, {"symmetry": True}, "symmetry"),
    ({"model": {"name": "mlp"}, "train": {"epochs": 1}, "input": {"channels": 1}}, {}, "input: describes a teacher"),
])
def test_recipe_rules_for_own_teachers(teacher, extra, needle, tmp_path, cli):
    for name in ("t.onnx", "t.pt2", "w.pt"):
        (tmp_path / name).write_bytes(b"x")
    result = cli("recipe", "check", _recipe(tmp_path, teacher, **extra))
    assert result.exit_code == 2 and needle in result.stderr, result.output
    assert "\n" not in result.stderr.strip()


class WithFeature(torch.nn.Module):
    """A teacher of the user's own class that also returns a feature map (its second output)."""

    def __init__(self):
        super().__init__()
        self.net = build_model("cnn", in_channels=1, num_classes=10, image_size=8)

    def forward(self, x):
        feat = self.net.stages(x)
        return self.net.head(feat), feat


def test_onnx_teacher_extra_output_is_a_feature_for_hint(tmp_path, cli):
    """Feature KD with an ONNX teacher names one of its extra outputs; the student's adapter is fed it."""

    model = WithFeature().eval()
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(tmp_path / "f.onnx"), input_names=["input"],
                      output_names=["logits", "stage_out"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    teacher = OnnxTeacher(tmp_path / "f.onnx", self_contained_onnx(tmp_path / "f.onnx"))
    assert teacher.feature_paths() == ["stage_out"]
    from kdedge.features import FeatureTap

    x = torch.randn(3, 1, 8, 8)
    with FeatureTap(teacher, ["stage_out"]) as tap, torch.no_grad():
        logits = teacher(x)
        assert torch.allclose(tap.features["stage_out"], model.net.stages(x), atol=1e-5)
    assert torch.allclose(logits, model(x)[0], atol=1e-5)


def test_hint_from_an_onnx_teacher_output_through_the_cli(tmp_path, cli):
    torch.onnx.export(WithFeature().eval(), (torch.zeros(2, 1, 8, 8),), str(tmp_path / "f.onnx"),
                      input_names=["input"], output_names=["logits", "stage_out"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    recipe = _recipe(tmp_path, {"onnx": "f.onnx"})
    raw = yaml.safe_load(recipe.read_text())
    raw["student"]["model"] = {"name": "cnn", "channels": [8, 16]}
    raw["distill"]["losses"].append({"name": "hint", "student": "stages.1", "teacher": "stage_out"})
    recipe.write_text(yaml.safe_dump(raw))
    result = cli("distill", recipe)
    assert result.exit_code == 0, result.output
    kd = json.loads((tmp_path / "runs" / "own" / "manifest.json").read_text())["stages"]["student"]["kd"]
    assert kd["losses"][1] == {"name": "hint", "weight": 1.0, "student": "stages.1", "teacher": "stage_out"}
    # a name the ONNX file does not have is refused with the ones it has
    raw["distill"]["losses"][1]["teacher"] = "nope"
    raw["name"] = "own2"
    recipe.write_text(yaml.safe_dump(raw))
    bad = cli("distill", recipe)
    assert bad.exit_code == 2 and "nope" in bad.stderr and "stage_out" in bad.stderr, bad.output


def test_teachers_exported_with_a_fixed_batch_size_run_any_batch(own_teacher, tmp_path, cli):
    """Users often export with a fixed batch (ONNX batch 1, .pt2 without a dynamic dim): run in padded chunks."""
    model, x = own_teacher["model"], own_teacher["x_test"]
    torch.export.save(torch.export.export(model, (x[:8],)), tmp_path / "fixed8.pt2")
    torch.onnx.export(model, (x[:1],), str(tmp_path / "fixed1.onnx"), input_names=["pixels"], output_names=["y"],
                      dynamo=True)
    exported = load_exported(tmp_path / "fixed8.pt2", (tmp_path / "fixed8.pt2").read_bytes())
    onnx_teacher = OnnxTeacher(tmp_path / "fixed1.onnx", self_contained_onnx(tmp_path / "fixed1.onnx"))
    assert exported.input_shape[0] == 8 and onnx_teacher.input_shape[0] == 1
    with torch.no_grad():
        for teacher in (exported, onnx_teacher):
            assert (teacher(x[:19]) - own_teacher["logits"][:19]).abs().max() < 1e-4  # 19: a padded tail
    recipe = _recipe(tmp_path, {"onnx": "fixed1.onnx"})
    assert cli("distill", recipe).exit_code == 0
    result = cli("export", tmp_path / "runs" / "own", "--format", "onnx-int8", "--allow-drop")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "runs" / "own" / "manifest.json").read_text())
    assert manifest["exports"]["teacher"]["onnx"]["parity"]["max_abs_diff"] < 1e-4


def test_changed_teacher_file_is_named_as_such(own_teacher, tmp_path, cli):
    path = tmp_path / "t.onnx"
    path.write_bytes(self_contained_onnx(own_teacher["dir"] / "teacher.onnx"))
    recipe = _recipe(tmp_path, {"onnx": "t.onnx"})
    assert cli("distill", recipe).exit_code == 0
    other = build_model("cnn", in_channels=1, num_classes=10, image_size=8).eval()
    torch.onnx.export(other, (own_teacher["x_test"][:2],), str(path), dynamo=True, external_data=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    result = cli("distill", recipe)
    assert result.exit_code == 2 and "teacher.onnx changed since" in result.stderr and "--force" in result.stderr


@pytest.mark.parametrize("data, teacher_input, needle", [
    ({"image_size": 16}, {"image_size": 8}, "teacher.input.image_size is 8 but data.image_size"),
    ({"color": "grayscale"}, {"channels": 3}, "teacher.input.channels is 3 but data.color"),
    ({"mean": [0.5], "std": [0.2]}, {"mean": [0.3], "std": [0.2]}, "teacher.input.mean is [0.3] but data.mean"),
])
def test_recipe_check_compares_the_contract_with_the_data_options(data, teacher_input, needle, tmp_path, cli):
    (tmp_path / "t.onnx").write_bytes(b"x")
    (tmp_path / "imgs").mkdir()
    recipe = _recipe(tmp_path, {"onnx": "t.onnx", "input": teacher_input})
    raw = yaml.safe_load(recipe.read_text())
    raw["data"] = {"dataset": "image_folder", "root": "imgs", **data}
    recipe.write_text(yaml.safe_dump(raw))
    result = cli("recipe", "check", recipe)
    assert result.exit_code == 2 and needle in result.stderr, result.output


def test_duplicate_class_names_in_the_contract(tmp_path, cli):
    (tmp_path / "t.onnx").write_bytes(b"x")
    result = cli("recipe", "check", _recipe(tmp_path, {"onnx": "t.onnx", "input": {"classes": ["a", "b", "a"]}}))
    assert result.exit_code == 2 and "names a more than once" in result.stderr


def test_bench_of_a_run_whose_teacher_was_not_exported(own_teacher, tmp_path, cli):
    """Export only the student (what a user who ships the student does): the bench reports it without the
    teacher rows instead of failing on the missing teacher."""
    recipe = _recipe(tmp_path, {"onnx": str(own_teacher["dir"] / "teacher.onnx")}, )
    assert cli("distill", recipe).exit_code == 0
    run = tmp_path / "runs" / "own"
    assert cli("export", run, "--models", "student", "--format", "onnx").exit_code == 0
    result = cli("bench", run, "--runs", "2", "--mc-samples", "0")
    assert result.exit_code == 0, result.output
    report = json.loads((run / "bench" / "report.json").read_text())
    assert set(report["models"]) == {"student"} and (run / "bench" / "report.md").is_file()
