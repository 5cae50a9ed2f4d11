"""The trials plumbing (kdedge.trials): the local backend runs every trial, keeps the others when one fails,
reuses finished trials; the seed report's mean ± std; the backend options; a sweep whose point fails."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from kdedge.errors import KdedgeError
from kdedge.recipe import recipe_from_dict
from kdedge.run import RunDir
from kdedge.stages.context import StageContext
from kdedge.trials import LocalBackend, Trial, TrialsFailed, make_backend
from kdedge.trials.seeds import parse_seeds, run_seeds
from kdedge.trials.trial import RESULT_FILE, one_line

from tests.conftest import TINY_RECIPE, deep_update
from tests.unit.test_distill import KD, _run

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # the recipe schema's pattern for a run name


def _trial(tmp: Path, name: str, **overrides) -> Trial:
    recipe = recipe_from_dict(deep_update(TINY_RECIPE, {"name": name, "output_dir": str(tmp / "runs"), **overrides}))
    return Trial.of(name, recipe)


def _record(accuracy: float, nll: float = 0.5, ece: float = 0.05) -> dict:
    return {"status": "complete", "test": {"accuracy": accuracy, "nll": nll, "ece": ece}, "parameters": 10,
            "train_time_s": 1.0}


class FakeStage:
    """A stage that records its calls and writes a finished record per role, or raises for some runs."""

    def __init__(self, metrics: dict[str, dict[str, tuple]] | None = None, fail: tuple[str, ...] = ()):
        self.calls: list[str] = []
        self.metrics, self.fail = metrics or {}, fail

    def __call__(self, recipe, planned, ctx, *, resume):
        self.calls.append(recipe.name)
        run = planned.create()
        if recipe.name in self.fail:
            run.update_manifest(stages={"student": {"status": "running", "pid": os.getpid()}})
            raise RuntimeError("boom\nin two lines")
        roles = self.metrics.get(recipe.name, {"student": (0.5 + len(self.calls) / 100,)})
        run.update_manifest(stages={role: _record(*values) for role, values in roles.items()})


def test_local_backend_keeps_the_other_trials_when_one_fails(tmp_path: Path):
    trials = [_trial(tmp_path, name) for name in ("a", "b", "c")]
    stage = FakeStage(fail=("b",))
    outcomes = LocalBackend().run(trials, stage, StageContext(), resume=False)
    assert stage.calls == ["a", "b", "c"]
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].error == "RuntimeError: boom in two lines"  # one line
    assert [o.accuracy for o in outcomes] == [0.51, None, 0.53]  # as the stage recorded them
    # the failed trial's stage says so, with the error; only finished trials are marked finished
    record = RunDir(trials[1].root).stage_record("student")
    assert record["status"] == "failed" and record["error"] == outcomes[1].error
    assert [(t.root / RESULT_FILE).is_file() for t in trials] == [True, False, True]


def test_rerun_reuses_finished_trials_and_retries_failed_ones(tmp_path: Path):
    trials = [_trial(tmp_path, name) for name in ("a", "b")]
    LocalBackend().run(trials, FakeStage(fail=("b",)), StageContext(), resume=False)
    stage = FakeStage()
    outcomes = LocalBackend().run(trials, stage, StageContext(), resume=False)
    assert stage.calls == ["b"]  # "a" is not run again
    assert [o.status for o in outcomes] == ["reused", "done"]
    assert outcomes[0].accuracy == 0.51
    # the same run directory with another recipe (another seed) is not reused: the run's own rule refuses it
    changed = _trial(tmp_path, "a", seed=1)
    outcome, = LocalBackend().run([changed], stage, StageContext(), resume=False)
    assert outcome.status == "failed" and "made by a different recipe" in outcome.error


def test_one_line_keeps_a_kdedge_message_as_written():
    assert one_line(KdedgeError("x.yaml: field: fix it")) == "x.yaml: field: fix it"
    assert one_line(ValueError("a\n  b")) == "ValueError: a b"
    assert len(one_line(ValueError("x" * 5000))) == 400


def test_backend_options(monkeypatch):
    assert make_backend("local").name == "local"
    with pytest.raises(KdedgeError, match="--address, --cpus-per-trial: only with --backend ray"):
        make_backend("local", address="auto", cpus_per_trial=2)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(KdedgeError, match=re.escape("pip install 'kdedge[ray]'")):
        make_backend("ray")


def test_backend_ray_without_ray_is_one_line_exit_2(make_recipe, cli, monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)
    path = make_recipe(KD)
    result = cli("sweep", path, "--set", "distill.losses[0].temperature=1,2", "--backend", "ray")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "pip install 'kdedge[ray]'" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing ran
    result = cli("distill", path, "--backend", "ray")
    assert result.exit_code == 2 and "only with --seeds" in result.stderr


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3") == [3]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(KdedgeError, match="--seeds"):
            parse_seeds(bad)


def test_seeds_report_is_the_mean_and_std_of_the_finished_seeds(tmp_path: Path):
    recipe = recipe_from_dict(deep_update(KD, {"name": "kd", "output_dir": str(tmp_path / "runs")}))
    values = {0: (0.90, 0.80, 0.85), 1: (0.92, 0.78, 0.88), 2: (0.91, 0.79, 0.80)}  # teacher, baseline, KD
    metrics = {f"kd_seed{s}": {"teacher": (t, 0.3, 0.01), "baseline": (b, 0.6, 0.04), "student": (k, 0.5, 0.03 + s / 100)}
               for s, (t, b, k) in values.items()}
    stage = FakeStage(metrics, fail=("kd_seed3",))
    with pytest.raises(TrialsFailed, match="1 of 4 seeds failed") as failed:
        run_seeds(recipe, "kd.yaml", [0, 1, 2, 3], LocalBackend(), stage, StageContext(), resume=False)
    assert failed.value.exit_code == 1
    out = tmp_path / "runs" / "kd_seeds"
    result = json.loads((out / "seeds.json").read_text())  # written before the failure was raised
    assert result["seeds"] == [0, 1, 2] and set(result["failed_seeds"]) == {"3"}
    stats = result["summary"]["stats"]
    for role, column in (("teacher", 0), ("baseline", 1), ("kd", 2)):
        accs = np.array([v[column] for v in values.values()])
        assert stats[role]["accuracy"]["mean"] == pytest.approx(accs.mean())
        assert stats[role]["accuracy"]["std"] == pytest.approx(accs.std(ddof=1))
    assert stats["kd"]["ece"]["std"] == pytest.approx(np.std([0.03, 0.04, 0.05], ddof=1))
    gap = np.mean([0.90, 0.92, 0.91]) - np.mean([0.80, 0.78, 0.79])
    assert result["summary"]["gap_closed"]["kd"] == pytest.approx((np.mean([0.85, 0.88, 0.80]) - 0.79) / gap)
    markdown = (out / "seeds.md").read_text()
    assert "| KD student | 84.33 ± 4.04 |" in markdown and "seed 3 failed: RuntimeError: boom" in markdown
    assert [o for o in stage.calls] == ["kd_seed0", "kd_seed1", "kd_seed2", "kd_seed3"]


def test_sweep_point_names_are_run_names():
    from kdedge.stages.sweep import point_dirname

    values = [4.0, "calibrated", [8], [8, 16], {"name": "cnn", "channels": [8, 16], "dropout": 0.5}, -1, "_x"]
    names = [point_dirname(v) for v in values]
    assert all(re.fullmatch(NAME_PATTERN, n) for n in names)
    assert len(set(names)) == len(names)
    assert names[:2] == ["4.0", "calibrated"]


def test_sweep_keeps_the_points_that_finish_and_reuses_them(tmp_path: Path):
    """A point that asks for more transfer images per class than there are fails; the other point's results
    are written, and a rerun reuses it (its run is not touched)."""
    field = "distill.transfer.reduced.per_class"
    raw = deep_update(KD, {"sweep": {"set": field, "values": [20, 5000]}})
    with pytest.raises(TrialsFailed, match=r"1 of 2 points failed \(5000: distill.transfer.reduced.per_class: "):
        _run(raw, tmp_path)
    run = tmp_path / "runs" / "tiny"
    report = json.loads((run / "sweep" / field / "sweep.json").read_text())
    good, bad = report["points"]
    point = json.loads((run / good["run"] / "manifest.json").read_text())["stages"]
    assert good["student"] == point["student"]["test"] and good["baseline"] == point["baseline"]["test"]
    assert point["student"]["train_images"] == 200  # 20 per class: the point's own recipe
    assert bad["student"] is None and "lower per_class" in bad["error"]
    assert "| 5000 | failed: distill.transfer.reduced.per_class" in (run / "sweep" / field / "sweep.md").read_text()
    model = run / good["run"] / "student" / "model.pt"
    before = model.stat().st_mtime_ns
    _run(deep_update(raw, {"sweep": {"values": [20]}}), tmp_path)
    assert model.stat().st_mtime_ns == before


def test_sweep_points_trained_as_stages_of_the_run_become_runs_of_their_own(tmp_path: Path):
    """A run whose sweep points were stages of the run itself (records sweep/<field>/<value>/... in its
    manifest, before points were trials): those stages are removed and each point is run as a trial."""
    run, _ = _run(KD, tmp_path)
    old = run / "sweep" / "distill.losses_0.temperature" / "2.0" / "student"
    old.mkdir(parents=True)
    (old / "model.pt").write_bytes(b"old")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["sweep/distill.losses_0.temperature/2.0/student"] = {"status": "complete", "test": {}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    _, stages = _run(deep_update(KD, {"sweep": {"set": "distill.losses[0].temperature", "values": [2.0]}}), tmp_path)
    assert not any(stage.startswith("sweep/") for stage in stages)
    point = json.loads((old.parent / "manifest.json").read_text())["stages"]
    assert point["student"]["status"] == "complete" and point["student"]["kd"]["losses"][0]["temperature"] == 2.0
    assert (old / "model.pt").read_bytes() != b"old"
