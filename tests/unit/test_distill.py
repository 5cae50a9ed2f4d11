"""kdedge distill on real data (scikit-learn digits): student + baseline, caches, transfer sets, hints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdedge.recipe import recipe_from_dict
from kdedge.run import open_run
from kdedge.stages.context import StageContext
from kdedge.stages.distill import distill

from tests.conftest import interrupt_kd_step_at, TINY_RECIPE, deep_update

KD = deep_update(TINY_RECIPE, {
    "teacher": {"model": {"widths": [64]}, "train": {"epochs": 3}},
    "student": {"model": {"name": "mlp", "widths": [16]},
                "train": {"epochs": 2, "batch_size": 64, "optimizer": {"lr": 0.1}, "augment": False}},
    "distill": {"losses": [{"name": "hinton", "alpha": 0.5, "temperature": 4.0}]},
})

CONV_KD = deep_update(KD, {
    "teacher": {"model": {"name": "cnn", "channels": [16, 32]}},
    "student": {"model": {"name": "cnn", "channels": [8, 8]}},
    "distill": {"losses": [{"name": "hinton", "alpha": 0.5, "temperature": 4.0},
                           {"name": "hint", "weight": 0.5, "student": "stages.1", "teacher": "stages.0"}]},
})
CONV_KD["teacher"]["model"].pop("widths")
CONV_KD["student"]["model"].pop("widths")


def _run(raw: dict, tmp: Path, **overrides) -> tuple[Path, dict]:
    recipe = recipe_from_dict(deep_update(raw, {"output_dir": str(tmp / "runs"), **overrides}))
    planned = open_run(recipe, None, force=False)
    stages = distill(recipe, planned, StageContext())
    return planned.run.root, stages


def _weights(run: Path, stage: str) -> dict:
    return torch.load(run / stage / "model.pt", weights_only=True)["state_dict"]


def test_distill_cli_trains_teacher_student_baseline_and_reuses(tmp_path: Path, make_recipe, cli):
    path = make_recipe(KD)
    result = cli("distill", path)
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "runs" / "tiny"
    manifest = json.loads((run / "manifest.json").read_text())
    for stage in ("teacher", "student", "baseline"):
        assert manifest["stages"][stage]["status"] == "complete"
        assert (run / stage / "model.pt").is_file()
    student, baseline = manifest["stages"]["student"], manifest["stages"]["baseline"]
    assert student["kd"]["losses"][0] == {"name": "hinton", "weight": 1.0, "alpha": 0.5, "temperature": 4.0}
    assert baseline["kd"] is None and student["parameters"] == baseline["parameters"]
    assert student["train_images"] == baseline["train_images"] == manifest["data"]["n_train"]
    assert "baseline" in result.stdout and "KD: hinton T=4 a=0.5" in result.stdout
    # the student really learned from the teacher: it differs from the baseline trained on the same seed
    assert any(not torch.equal(a, b) for a, b in zip(_weights(run, "student").values(), _weights(run, "baseline").values()))

    again = cli("distill", path)
    assert again.exit_code == 0 and again.stdout.count("reusing") == 3


def test_cached_teacher_equals_per_batch_teacher(tmp_path: Path):
    run_a, _ = _run(KD, tmp_path / "a")
    run_b, _ = _run(deep_update(KD, {"distill": {"cache_teacher": False}}), tmp_path / "b")
    a, b = _weights(run_a, "student"), _weights(run_b, "student")
    for key in a:  # same seed, no augmentation; only batch-size-dependent float rounding may differ
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    records = [json.loads((r / "manifest.json").read_text())["stages"]["student"]["kd"] for r in (run_a, run_b)]
    assert records[0]["teacher_cached"] is True and records[1]["teacher_cached"] is False


def test_calibrated_temperature_is_the_fitted_t_star(tmp_path: Path):
    raw = deep_update(KD, {"distill": {"losses": [{"name": "hinton", "alpha": 0.5, "temperature": "calibrated"}]}})
    run, stages = _run(raw, tmp_path)
    t_star = json.loads((run / "manifest.json").read_text())["temperatures"]["teacher"]
    assert stages["student"]["kd"]["losses"][0]["temperature"] == t_star
    assert stages["student"]["kd"]["teacher_temperature"] == t_star
    assert (run / "teacher" / "calibration.json").is_file()


def test_reduced_transfer_set_for_student_and_baseline(tmp_path: Path):
    _, stages = _run(deep_update(KD, {"distill": {"transfer": {"reduced": {"per_class": 20}}}}), tmp_path)
    assert stages["student"]["train_images"] == stages["baseline"]["train_images"] == 200
    assert "20 images per class" in stages["student"]["kd"]["transfer"]


def test_unlabeled_transfer_uses_teacher_only(tmp_path: Path):
    _, stages = _run(deep_update(KD, {"distill": {"transfer": {"unlabeled": True}}}), tmp_path)
    assert stages["student"]["kd"]["label_mode"] == "none"
    assert "true labels" in stages["baseline"]["transfer"]
    assert stages["student"]["test"]["accuracy"] > 0.5  # learned digits from soft targets alone


def test_hint_loss_on_unmodified_conv_nets_resumes_bitwise(tmp_path: Path, monkeypatch):
    run, stages = _run(CONV_KD, tmp_path / "full")
    assert [loss["name"] for loss in stages["student"]["kd"]["losses"]] == ["hinton", "hint"]
    assert torch.load(run / "student" / "checkpoint.pt", weights_only=True)["extra"], "adapter is checkpointed"

    # the same recipe, interrupted in the student's second epoch, then resumed
    import kdedge.stages.students as students_module

    real = interrupt_kd_step_at(monkeypatch, 25)  # digits: 18 batches per epoch, so this is inside epoch 2
    recipe = recipe_from_dict(deep_update(CONV_KD, {"output_dir": str(tmp_path / "cut" / "runs")}))
    with pytest.raises(KeyboardInterrupt):
        distill(recipe, open_run(recipe, None, force=False), StageContext())
    cut = tmp_path / "cut" / "runs" / "tiny"
    assert torch.load(cut / "student" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(students_module, "make_distill_step", real)
    distill(recipe, open_run(recipe, None, force=False), StageContext(), resume=True)
    full, resumed = _weights(run, "student"), _weights(cut, "student")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


BAD = [
    ({"distill": {"losses": [{"name": "hinton", "weight": -1.0}]}}, "distill.losses[0].weight"),
    ({"distill": {"losses": [{"name": "hinton", "temperature": 0.0}]}}, "distill.losses[0].temperature"),
    ({"distill": {"losses": [{"name": "hinton", "temperature": -2.0}]}}, "distill.losses[0].temperature"),
    ({"distill": {"losses": [{"name": "fitnet"}]}}, "distill.losses[0].name: unknown loss 'fitnet'; available: ce, dkd, hint, hinton"),
    ({"distill": {"losses": [{"name": "hint", "student": "layers.7", "teacher": "layers.0"}]}}, "distill.losses[0].student"),
    ({"distill": {"losses": [{"name": "hinton", "alpah": 0.5}]}}, "distill.losses[0].alpah: unknown key"),
    ({"distill": {"losses": [{"name": "dkd"}], "transfer": {"unlabeled": True}}}, "needs labels"),
    ({"distill": {"losses": []}}, "distill.losses"),
    ({"distill": {"losses": [{"name": "hinton", "weight": 0.0}]}}, "every distillation loss has weight 0"),
    ({"distill": {"transfer": {"reduced": {"per_class": 100000}}}}, "distill.transfer.reduced.per_class"),
]


@pytest.mark.parametrize("overrides,needle", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_distill_inputs_one_line_exit_2_nothing_written(overrides, needle, tmp_path: Path, make_recipe, cli):
    raw = deep_update(KD, overrides)
    if "losses" in overrides.get("distill", {}):
        raw["distill"]["losses"] = overrides["distill"]["losses"]
    path = make_recipe(raw)
    result = cli("distill", path)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_distill_needs_a_student(make_recipe, cli):
    result = cli("distill", make_recipe({"distill": KD["distill"]}))
    assert result.exit_code == 2 and "distill needs a student" in result.stderr


def test_teacher_from_another_run_is_imported_not_retrained(tmp_path: Path, make_recipe, cli):
    teacher_recipe = make_recipe(filename="teacher.yaml")
    assert cli("train", teacher_recipe).exit_code == 0
    assert cli("calibrate", tmp_path / "runs" / "tiny").exit_code == 0
    kd = {k: v for k, v in KD.items() if k != "teacher"}
    kd = deep_update(kd, {"name": "kd", "output_dir": str(tmp_path / "runs"),
                          "teacher": {"from_run": str(tmp_path / "runs" / "tiny")},
                          "distill": {"losses": [{"name": "hinton", "temperature": "calibrated"}]}})
    path = make_recipe(raw=__import__("yaml").safe_dump(kd), filename="kd.yaml")
    result = cli("distill", path)
    assert result.exit_code == 0, result.stderr
    assert "imported the finished teacher" in result.stdout and "teacher epoch" not in result.stdout
    src = tmp_path / "runs" / "tiny"
    dst = tmp_path / "runs" / "kd"
    assert (dst / "teacher" / "model.pt").read_bytes() == (src / "teacher" / "model.pt").read_bytes()
    manifest = json.loads((dst / "manifest.json").read_text())
    source_manifest = json.loads((src / "manifest.json").read_text())
    assert manifest["stages"]["teacher"]["imported_from"] == str(src)
    assert manifest["temperatures"] == source_manifest["temperatures"]
    assert manifest["stages"]["student"]["kd"]["losses"][0]["temperature"] == source_manifest["temperatures"]["teacher"]
    assert manifest["recipe"]["teacher"]["model"] == source_manifest["recipe"]["teacher"]["model"]


@pytest.mark.parametrize("teacher,needle", [
    ({"from_run": "/nonexistent/run"}, "teacher.from_run: /nonexistent/run is not a kdedge run"),
    ({}, "the teacher needs model: and train:, from_run:"),
])
def test_bad_teacher_sources(teacher, needle, tmp_path: Path, make_recipe, cli):
    kd = {k: v for k, v in KD.items() if k != "teacher"}
    kd["teacher"] = teacher
    kd["output_dir"] = str(tmp_path / "runs")
    result = cli("distill", make_recipe(raw=__import__("yaml").safe_dump(kd)))
    assert result.exit_code == 2 and needle in result.stderr, result.stderr
