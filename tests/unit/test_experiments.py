"""Seed 001's experiments end to end on real data (digits, small budgets): sweep + ensemble, chain,
symmetry; each writes its JSON, Markdown and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdedge.errors import KdedgeError
from kdedge.recipe import recipe_from_dict

from tests.conftest import deep_update
from tests.unit.test_distill import KD, _run

PNG = b"\x89PNG\r\n\x1a\n"


def _assert_report(directory: Path, name: str) -> dict:
    assert (directory / f"{name}.png").read_bytes().startswith(PNG)
    assert (directory / f"{name}.md").read_text().startswith("# ")
    return json.loads((directory / f"{name}.json").read_text())


def test_temperature_sweep_with_ensembles(tmp_path: Path):
    raw = deep_update(KD, {"sweep": {"set": "distill.losses[0].temperature", "values": [1.0, 4.0, 16.0],
                                     "ensemble": True}})
    run, stages = _run(raw, tmp_path)
    report = _assert_report(run / "sweep" / "distill.losses_0.temperature", "sweep")
    assert [p["value"] for p in report["points"]] == [1.0, 4.0, 16.0]
    for value in ("1.0", "4.0", "16.0"):  # each point is a run of its own, with the run's teacher imported
        point = json.loads((run / "sweep" / "distill.losses_0.temperature" / value / "manifest.json").read_text())
        assert point["stages"]["student"]["kd"]["losses"][0]["temperature"] == float(value)
        assert point["stages"]["teacher"]["test"] == stages["teacher"]["test"]
        assert "baseline" not in point["stages"]
    # KD-only field: all points share the run's one baseline
    assert {p["baseline"]["accuracy"] for p in report["points"]} == {stages["baseline"]["test"]["accuracy"]}
    ensemble = _assert_report(run / "sweep" / "distill.losses_0.temperature", "ensemble")
    assert [row["k"] for row in ensemble["best_k"]] == [1, 2, 3]
    assert ensemble["best_k"][0]["mean_probability"] in ensemble["member_test_accuracy"]


def test_width_sweep_trains_a_baseline_per_point(tmp_path: Path):
    raw = deep_update(KD, {"sweep": {"set": "student.model.widths", "values": [[8], [32]]}})
    run, stages = _run(raw, tmp_path)
    report = _assert_report(run / "sweep" / "student.model.widths", "sweep")
    params = [p["student_parameters"] for p in report["points"]]
    assert params[0] < params[1]
    for value in ("8", "32"):
        point = json.loads((run / "sweep" / "student.model.widths" / value / "manifest.json").read_text())
        assert point["stages"]["baseline"]["status"] == "complete"



def test_capacity_sweep_with_mc_dropout_uncertainty_transfer(tmp_path: Path):
    """Seed 000: students of growing capacity from a dropout teacher, MC dropout on all, MUPE."""
    from kdedge.inputs import normalise
    from kdedge.modelfile import load_model
    from kdedge.stages.data import prepare_data
    from kdedge.uncertainty import mc_dropout_predict

    small = {"name": "mlp", "widths": [8]}  # no dropout: reported as such, MUPE from its softmax
    large = {"name": "mlp", "widths": [32], "dropout": 0.3}
    raw = deep_update(KD, {"teacher": {"model": {"dropout": 0.3}}, "distill": {"baseline": False},
                           "sweep": {"set": "student.model", "values": [small, large], "mc_dropout": 7}})
    run, stages = _run(raw, tmp_path)
    out = run / "sweep" / "student.model"
    report = _assert_report(out, "uncertainty")
    names = list(report["models"])
    assert names[0] == "teacher" and len(names) == 3
    small_name, large_name = names[1], names[2]
    assert report["models"][small_name] == {"applicable": False, "reason": report["models"][small_name]["reason"]}
    assert "no nn.Dropout" in report["models"][small_name]["reason"]
    assert report["models"][large_name]["applicable"] and report["samples"] == 7
    assert report["parameters"][small_name] < report["parameters"][large_name]

    # oracle: the teacher's MC confidence from mc_dropout_predict with the recipe's seed, the small
    # student's from a plain forward pass; MUPE and MC accuracy recomputed here
    recipe = recipe_from_dict(deep_update(raw, {"output_dir": str(tmp_path / "runs")}))
    test = prepare_data(recipe).training
    x = torch.from_numpy(normalise(test.test.images.numpy(), test.stats))
    teacher, _ = load_model(run / "teacher" / "model.pt", fix="")
    assert report["masks"] == "independent"  # each model its own masks (seed 000); the teacher's stream is its name
    mc = mc_dropout_predict(teacher, x, samples=7, seed=recipe.seed, stream="teacher")
    student, _ = load_model(run / report["stages"][small_name] / "model.pt", fix="")
    with torch.no_grad():
        conf_small = torch.softmax(student.eval()(x).double(), 1).max(1).values
    expected = float(((mc.confidence.double() - conf_small) ** 2).mean())
    assert report["mupe"][small_name]["value"] == pytest.approx(expected, abs=1e-9)
    assert report["mupe"][small_name]["student_confidence"] == "deterministic (no dropout)"
    accuracy = (mc.mean_probs.argmax(1) == test.test.labels).double().mean().item()
    assert report["models"]["teacher"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert report["mupe"][large_name]["student_confidence"] == "mc"


def test_sweep_command_line_with_mc_dropout(tmp_path: Path, make_recipe, cli):
    raw = deep_update(KD, {"teacher": {"model": {"dropout": 0.3}}, "distill": {"baseline": False}})
    path = make_recipe({k: v for k, v in raw.items() if k != "output_dir"})
    result = cli("sweep", path, "--set", "student.model.widths=[8],[16]", "--mc-dropout", "3")
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "tiny" / "sweep" / "student.model.widths"
    report = _assert_report(out, "uncertainty")
    assert report["samples"] == 3 and list(report["models"]) == ["teacher", "[8]", "[16]"]
    assert set(report["mupe"]) == {"[8]", "[16]"}
    bad = cli("sweep", path, "--set", "student.model.widths")
    assert bad.exit_code == 2 and "write FIELD=VALUES" in bad.output and "Traceback" not in bad.output

def test_chain_and_symmetry(tmp_path: Path):
    raw = deep_update(KD, {"assistants": {"assistant": {"model": {"name": "mlp", "widths": [32]},
                                                        "train": KD["student"]["train"]}},
                           "chain": ["teacher", "assistant", "student"], "symmetry": True})
    run, stages = _run(raw, tmp_path)
    chain = _assert_report(run / "chain", "chain")
    assert [h["name"] for h in chain["hops"]] == ["assistant", "student"]
    assert chain["direct_student"] == stages["student"]["test"]
    assert stages["chain/assistant"]["parameters"] > stages["chain/student"]["parameters"]
    symmetry = _assert_report(run / "symmetry", "symmetry")
    assert stages["symmetry/teacher_copy"]["model"] == stages["teacher"]["model"]
    assert stages["symmetry/teacher_copy"]["parameters"] == stages["teacher"]["parameters"]
    assert symmetry["teacher_copy_from_student"] == stages["symmetry/teacher_copy"]["test"]


@pytest.mark.parametrize("overrides,needle", [
    ({"chain": ["teacher", "ta", "student"]}, "chain refers to 'ta', which is not defined under assistants"),
    ({"chain": ["student", "teacher", "student"]}, "chain must start with teacher"),
    ({"sweep": {"set": "teacher.train.epochs", "values": [1]}}, "sweep.set"),
    ({"sweep": {"set": "distill.losses[0].temperature", "values": [2.0, 0.0]}}, "sweep.values: 0.0"),
    ({"sweep": {"set": "distill.losses[5].alpha", "values": [0.1]}}, "has no item [5]"),
])
def test_bad_experiment_sections(overrides, needle):
    with pytest.raises(KdedgeError) as info:
        recipe_from_dict(deep_update(KD, overrides))
    assert needle in str(info.value)


def test_experiments_do_not_change_the_run_hash():
    base = recipe_from_dict(KD).hash
    assert recipe_from_dict(deep_update(KD, {"sweep": {"set": "distill.losses[0].alpha", "values": [0.1]}})).hash == base


def test_per_class_sweep_creates_the_reduced_section():
    from kdedge.recipe import sweep_point

    recipe = recipe_from_dict(deep_update(KD, {"sweep": {"set": "distill.transfer.reduced.per_class", "values": [10, 50]}}))
    assert sweep_point(recipe, 10).distill.transfer.reduced.per_class == 10
    with pytest.raises(KdedgeError, match=r"sweep.values: 0 for distill.transfer.reduced.per_class"):
        recipe_from_dict(deep_update(KD, {"sweep": {"set": "distill.transfer.reduced.per_class", "values": [0]}}))
