"""Quantized distillation (quant: section, modelopt backend) on real data (scikit-learn digits):
recipe checks, the QAT stage end to end, its model file, init from the fp32 student, resume, and the
stratified calibration subset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdedge.data.int8_calibration import calibration_indices
from kdedge.errors import KdedgeError
from kdedge.inference import predict_logits
from kdedge.modelfile import ModelSpecRecord, load_model
from kdedge.quant.modelopt_backend import (
    MISSING,
    load_qat_model,
    quantizer_count,
    require_modelopt,
)
from kdedge.recipe import TrainConfig, recipe_from_dict
from kdedge.run import open_run
from kdedge.stages.context import StageContext
from kdedge.stages.data import prepare_data
from kdedge.stages.distill import distill
from kdedge.stages.quant import QAT_STAGE, calibration_batches, prepare_qat_model
from tests.conftest import interrupt_kd_step_at, TINY_RECIPE, deep_update

# A conv student (INT8 matters for convolutions) distilled from the tiny MLP teacher; no baseline.
KD = deep_update(TINY_RECIPE, {
    "teacher": {"model": {"widths": [64]}, "train": {"epochs": 3}},
    "student": {"model": {"name": "cnn", "channels": [8, 8]},
                "train": {"epochs": 2, "batch_size": 64, "optimizer": {"lr": 0.1}, "augment": False}},
    "distill": {"losses": [{"name": "hinton", "alpha": 0.5, "temperature": 4.0}], "baseline": False},
})
QUANT = {"mode": "qat", "backend": "modelopt", "calib_images": 200,
         "train": {"epochs": 2, "batch_size": 64, "optimizer": {"lr": 0.01}, "augment": False}}
QAT = deep_update(KD, {"quant": QUANT})
INTERRUPT_AT = 25  # digits: 18 batches per epoch, so the 25th QAT step is inside epoch 2


def _write(path: Path, raw: dict, runs: Path) -> Path:
    path.write_text(yaml.safe_dump(deep_update(raw, {"output_dir": str(runs)}), sort_keys=False))
    return path


def _state(run: Path, stage: str) -> dict:
    return torch.load(run / stage / "model.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """`kdedge distill` without quant:, then again with it (same run): returns the run directory, both
    CLI results, the teacher/student files before QAT, and the in-memory QAT model as it was saved."""
    import kdedge.stages.quant as quant_stage
    from kdedge.cli import app

    tmp = tmp_path_factory.mktemp("qat")
    runner = CliRunner()
    first = runner.invoke(app, ["distill", str(_write(tmp / "kd.yaml", KD, tmp / "runs"))])
    assert first.exit_code == 0, first.stderr
    run = tmp / "runs" / "tiny"
    before = {stage: (run / stage / "model.pt").read_bytes() for stage in ("teacher", "student")}
    captured = {}
    real_save = quant_stage.save_qat_model

    def capturing_save(path, model, spec):
        captured["model"] = model
        real_save(path, model, spec)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quant_stage, "save_qat_model", capturing_save)
        second = runner.invoke(app, ["distill", str(_write(tmp / "qat.yaml", QAT, tmp / "runs"))])
    assert second.exit_code == 0, second.stderr
    return {"run": run, "first": first, "second": second, "before": before, "model": captured["model"]}


# ------------------------------------------------------------------------------------------- recipe

BAD = [
    ({"quant": {"mode": "ptq", "backend": "modelopt"}}, "quant.mode: Input should be 'qat'"),
    ({"quant": {"mode": "qat", "backend": "tensorrt"}}, "quant.backend: Input should be 'modelopt'"),
    ({"quant": {"mode": "qat", "backend": "modelopt", "init": "random"}},
     "quant.init: Input should be 'student' or 'scratch'"),
    ({"quant": {"mode": "qat", "backend": "modelopt", "calib_images": 0}}, "quant.calib_images: Input should be greater than 0"),
    ({"quant": {"mode": "qat", "backend": "modelopt", "calib_images": -5}}, "quant.calib_images: Input should be greater than 0"),
    ({"quant": {"mode": "qat"}}, "quant.backend: required field is missing"),
    ({"quant": {"mode": "qat", "backend": "modelopt", "calib": 5}},
     "quant.calib: unknown key; allowed keys here: mode, backend, init, calib_images, train"),
    ({"quant": {"mode": "qat", "backend": "modelopt", "train": {"epochs": 0}}}, "quant.train.epochs"),
]


@pytest.mark.parametrize("overrides,needle", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_quant_section_is_one_line_exit_2_nothing_written(overrides, needle, tmp_path: Path, make_recipe, cli):
    result = cli("distill", make_recipe(deep_update(KD, overrides)))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("init", ["student", "scratch"])
def test_quant_needs_a_distill_section(init: str):
    raw = deep_update(TINY_RECIPE, {"student": KD["student"], "quant": {"mode": "qat", "backend": "modelopt", "init": init}})
    with pytest.raises(KdedgeError) as err:
        recipe_from_dict(raw)
    assert f"quant (init: {init}) needs a distill: section" in err.value.message and "\n" not in err.value.message


def test_adding_quant_keeps_the_run_hash():
    assert recipe_from_dict(QAT).hash == recipe_from_dict(KD).hash
    other = deep_update(QAT, {"quant": {"calib_images": 64}})
    assert recipe_from_dict(other).hash == recipe_from_dict(KD).hash


def test_default_qat_budget():
    student = TrainConfig.model_validate({"epochs": 10, "optimizer": {"lr": 0.05},
                                          "schedule": {"name": "cosine", "warmup_epochs": 0.5}, "augment": False})
    quant = recipe_from_dict(deep_update(KD, {"quant": {"mode": "qat", "backend": "modelopt"}})).quant
    assert (quant.init, quant.calib_images, quant.train) == ("student", 512, None)
    tuned = quant.resolve_train(student)
    assert (tuned.epochs, tuned.optimizer.lr, tuned.schedule.warmup_epochs) == (2, 0.005, 0.0)
    assert tuned.model_dump(exclude={"epochs", "optimizer", "schedule"}) == \
        student.model_dump(exclude={"epochs", "optimizer", "schedule"})
    assert tuned.optimizer.momentum == student.optimizer.momentum and tuned.schedule.name == "cosine"
    assert quant.resolve_train(student.model_copy(update={"epochs": 3})).epochs == 1
    step = TrainConfig.model_validate({"epochs": 20, "schedule": {"name": "step", "milestones": [10, 15]}})
    assert quant.resolve_train(step).schedule.milestones == [2, 3]  # 5 epochs: scaled, still valid
    scratch = quant.model_copy(update={"init": "scratch"})
    assert scratch.resolve_train(student) == student
    given = recipe_from_dict(QAT).quant
    assert given.resolve_train(student) == given.train


# ----------------------------------------------------------------------------------------- the stage


def test_adding_quant_reuses_teacher_and_student_and_trains_qat(qat_run):
    run, second = qat_run["run"], qat_run["second"]
    for stage in ("teacher", "student"):
        assert (run / stage / "model.pt").read_bytes() == qat_run["before"][stage]
    assert second.stdout.count("reusing") == 2 and "student_qat" in second.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    record = manifest["stages"][QAT_STAGE]
    assert record["status"] == "complete" and record["quant"] == {
        "mode": "qat", "backend": "modelopt", "init": "student", "calib_images": 200}
    assert record["kd"]["losses"] == manifest["stages"]["student"]["kd"]["losses"]
    assert record["kd"]["teacher_cached"] is True and record["epochs"] == 2
    assert record["qat_train"]["optimizer"]["lr"] == 0.01
    assert record["test"]["accuracy"] > 0.5
    assert manifest["recipe"]["quant"]["mode"] == "qat"  # the section in force is recorded
    assert manifest["recipe_hash"] == recipe_from_dict(KD).hash


def test_saved_qat_model_restores_the_trained_model_exactly(qat_run):
    from modelopt.torch.quantization.nn import TensorQuantizer

    loaded, spec = load_qat_model(qat_run["run"] / QAT_STAGE / "model.pt", fix="retrain")
    assert spec.name == "cnn" and spec.kwargs == {"channels": [8, 8]}
    trained = qat_run["model"].cpu().to(memory_format=torch.contiguous_format).eval()
    data = prepare_data(recipe_from_dict(KD)).training
    oracle = predict_logits(trained, data.test, data.stats, batch_size=500, device=torch.device("cpu"))
    logits = predict_logits(loaded, data.test, data.stats, batch_size=500, device=torch.device("cpu"))
    assert torch.equal(logits, oracle)
    # real fake quant with calibrated ranges, the same as the trained model's
    quantizers = {n: m for n, m in loaded.named_modules() if isinstance(m, TensorQuantizer) and m.is_enabled}
    trained_q = dict(trained.named_modules())
    assert quantizer_count(loaded) == len(quantizers) >= 6
    for name, q in quantizers.items():
        assert q.amax is not None and torch.isfinite(q.amax).all() and (q.amax > 0).all(), name
        assert torch.equal(q.amax, trained_q[name].amax), name
    conv = loaded.stages[0][0]
    assert conv.weight_quantizer.amax.numel() == 8  # per output channel
    with torch.no_grad():
        w = conv.weight_quantizer(conv.weight)
    assert not torch.equal(w, conv.weight)
    assert all(len(torch.unique(w[c])) <= 256 for c in range(8))  # at most 2^8 levels per channel


def test_qat_model_file_errors_are_one_line(qat_run, tmp_path: Path):
    run = qat_run["run"]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    for path, needle in [(tmp_path / "missing.pt", "file not found"), (garbage, "corrupt or truncated"),
                         (run / "student" / "model.pt", "not a kdedge-qat-model-1 file")]:
        with pytest.raises(KdedgeError) as err:
            load_qat_model(path, fix="retrain it")
        assert needle in err.value.message and err.value.message.endswith("retrain it")
    with pytest.raises(KdedgeError, match="not a kdedge-model-1 file"):
        load_model(run / QAT_STAGE / "model.pt", fix="retrain it")


def test_init_student_starts_from_the_fp32_student_weights(qat_run):
    run = qat_run["run"]
    fp32, spec = load_model(run / "student" / "model.pt", fix="-")
    data = prepare_data(recipe_from_dict(KD)).training
    calib = calibration_batches(data, 200, 0, batch_size=64, device=torch.device("cpu"))
    torch.manual_seed(123)  # a different random init: it must be replaced by the student's weights
    model = prepare_qat_model(spec.build(), init_from=run / "student" / "model.pt", calib_batches=calib,
                              device=torch.device("cpu"))
    state = model.state_dict()
    for key, value in fp32.state_dict().items():
        assert torch.equal(state[key], value), key
    assert quantizer_count(model) >= 6
    # before any fine-tuning the fake-quant model is the fp32 student up to INT8 rounding
    labels = data.test.labels
    acc = {name: (predict_logits(m, data.test, data.stats, batch_size=500, device=torch.device("cpu"))
                  .argmax(1) == labels).double().mean().item() for name, m in (("fp32", fp32), ("int8", model))}
    assert abs(acc["int8"] - acc["fp32"]) < 0.03, acc


def test_init_scratch_keeps_the_seeded_random_init():
    spec = ModelSpecRecord(name="cnn", kwargs={"channels": [8, 8]}, in_channels=1, num_classes=10, image_size=8)
    torch.manual_seed(0)
    fresh = spec.build().state_dict()
    data = prepare_data(recipe_from_dict(KD)).training
    torch.manual_seed(0)
    model = prepare_qat_model(spec.build(), init_from=None, device=torch.device("cpu"),
                              calib_batches=calibration_batches(data, 50, 0, batch_size=64, device=torch.device("cpu")))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in fresh.items())


def test_interrupted_qat_resumes_to_the_same_weights(qat_run, tmp_path: Path, monkeypatch):
    import kdedge.stages.students as students_module

    kd = recipe_from_dict(deep_update(KD, {"output_dir": str(tmp_path / "runs")}))
    distill(kd, open_run(kd, None, force=False), StageContext())  # teacher + student, as in the fixture
    real = interrupt_kd_step_at(monkeypatch, INTERRUPT_AT)
    recipe = recipe_from_dict(deep_update(QAT, {"output_dir": str(tmp_path / "runs")}))
    with pytest.raises(KeyboardInterrupt):
        distill(recipe, open_run(recipe, None, force=False), StageContext())
    cut = tmp_path / "runs" / "tiny"
    ckpt = torch.load(cut / QAT_STAGE / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and any(k.endswith("_amax") for k in ckpt["model"])
    assert not (cut / QAT_STAGE / "model.pt").exists()
    monkeypatch.setattr(students_module, "make_distill_step", real)
    with pytest.raises(KdedgeError, match="pass --resume"):
        distill(recipe, open_run(recipe, None, force=False), StageContext())
    stages = distill(recipe, open_run(recipe, None, force=False), StageContext(), resume=True)
    assert stages[QAT_STAGE]["resumed_from_epoch"] == 1
    full, resumed = _state(qat_run["run"], QAT_STAGE), _state(cut, QAT_STAGE)
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_finished_qat_is_reused_but_not_for_another_quant_section(qat_run, tmp_path: Path, cli):
    runs = tmp_path / "runs"
    shutil.copytree(qat_run["run"], runs / "tiny")
    again = cli("distill", _write(tmp_path / "qat.yaml", QAT, runs))
    assert again.exit_code == 0 and again.stdout.count("reusing") == 3, again.stderr
    changed = cli("distill", _write(tmp_path / "changed.yaml", deep_update(QAT, {"quant": {"calib_images": 64}}), runs))
    assert changed.exit_code == 2 and "was trained with another quant: section" in changed.stderr, changed.stderr
    assert changed.stderr.count("\n") == 1


# -------------------------------------------------------------------------------- optional backend


def test_missing_modelopt_is_one_line_before_any_work(monkeypatch, make_recipe, cli, tmp_path: Path):
    for name in ("modelopt", "modelopt.torch", "modelopt.torch.opt", "modelopt.torch.quantization"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import modelopt...` raise ImportError
    with pytest.raises(KdedgeError) as err:
        require_modelopt()
    assert err.value.message == MISSING
    result = cli("distill", make_recipe(QAT))
    assert result.exit_code == 2 and result.stderr.strip() == f"kdedge: error: {MISSING}", result.stderr
    assert not (tmp_path / "runs").exists()


def test_kdedge_imports_without_importing_modelopt():
    code = ("import sys, kdedge.cli, kdedge.recipe, kdedge.stages.distill, kdedge.stages.quant, "
            "kdedge.quant.modelopt_backend, kdedge.data.int8_calibration; "
            "print(sorted(m for m in sys.modules if m.startswith('modelopt')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------- calibration


def test_calibration_indices_stratified_capped_deterministic():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2])  # 6 / 2 / 4 images
    # hand-computed quotas: count // 3 each; a class short of its share gives the rest to the others;
    # what does not divide evenly goes one each to the lowest labels
    for count, per_class in [(3, [1, 1, 1]), (4, [2, 1, 1]), (7, [3, 2, 2]), (10, [4, 2, 4]), (12, [6, 2, 4])]:
        idx = calibration_indices(labels, count, seed=0)
        assert idx.dtype == torch.int64 and len(idx) == count
        assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == count
        assert torch.bincount(labels[idx], minlength=3).tolist() == per_class, count
    assert set(calibration_indices(labels, 7, seed=0).tolist()) >= {6, 7}  # all of the small class
    assert torch.equal(calibration_indices(labels, 100, seed=3), torch.arange(12))  # capped
    assert len(calibration_indices(labels, 0, seed=0)) == 0
    assert torch.equal(calibration_indices(labels, 7, seed=5), calibration_indices(labels, 7, seed=5))
    draws = {tuple(calibration_indices(labels, 7, seed=s).tolist()) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    with pytest.raises(ValueError):
        calibration_indices(labels, -1, seed=0)
