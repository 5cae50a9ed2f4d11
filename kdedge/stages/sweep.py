"""The sweep experiment: one student per value of a recipe field, each point a trial with its own run
directory, <run>/sweep/<field>/<value>/ (the run's teacher imported, its baseline shared where the
field is KD-only), run by the chosen trials backend (kdedge.trials: local, or Ray Tune). The run's
sweep/<field>/ directory gets the table (sweep.json/.md), the plot, and the ensembles and MC-dropout
report of the students that finished; a failed point is reported with its error and the others kept.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from rich.markup import escape

from kdedge.errors import KdedgeError
from kdedge.io import write_json
from kdedge.layout import BASELINE, TEACHER
from kdedge.plots import line_plot
from kdedge.recipe.sweep import sweep_point_dict
from kdedge.run import RunDir
from kdedge.stages.experiments import (ExperimentInputs, Member, point_label, run_ensemble, run_uncertainty, slug,
                                       write_report)
from kdedge.trials import LocalBackend, Trial, TrialOutcome, TrialsFailed


def point_dirname(value: Any) -> str:
    """A sweep value as its trial's directory (and run) name: a valid recipe name, as close to the value
    as allowed (4.0, calibrated, 8, cnn_channels-8_16_dropout-0.5)."""
    name = re.sub(r"^[^A-Za-z0-9]+", "", slug(value).replace("=", "-"))
    return name[:100] or "value"


def shares_baseline(field: str) -> bool:
    """KD-only fields leave the baseline as it is: the run's one baseline serves every point."""
    return field.startswith("distill.losses") or field == "distill.cache_teacher"


def sweep_trials(inputs: ExperimentInputs) -> list[Trial]:
    """One trial per sweep value: the point's recipe, its teacher the run's own (imported from the run,
    or the same foreign file), its baseline left out when the run's one baseline serves every point."""
    recipe, run = inputs.recipe, inputs.run
    field = recipe.sweep.set
    base = run.root / "sweep" / slug(field)
    parent = recipe.to_dict()
    # the point's teacher is the run's teacher, whatever the swept field (as when points were stages)
    teacher = parent["teacher"] if recipe.teacher.source else {**parent["teacher"], "from_run": str(run.root)}
    shared_baseline = shares_baseline(field)
    trials, seen = [], {}
    for value in recipe.sweep.values:
        name = point_dirname(value)
        if name in seen:
            raise KdedgeError(f"sweep of {field}: values {seen[name]!r} and {value!r} share the directory name "
                              f"{name!r}; give values that differ in letters or digits")
        seen[name] = value
        raw = {**sweep_point_dict(parent, value), "name": name, "output_dir": str(base), "teacher": teacher}
        if shared_baseline:
            raw["distill"] = {**raw["distill"], "baseline": False}
        trials.append(Trial(point_label(value), raw, base / name))
    return trials


def retire_stage_points(run: RunDir, base: str) -> None:
    """Sweep points that kdedge once trained as stages of the run itself (records sweep/<field>/... in the
    run's manifest) are removed, so each point can become a run of its own (it is retrained once)."""
    manifest = run.read_manifest()
    old = [stage for stage in manifest.get("stages", {}) if stage.startswith(f"{base}/")]
    if not old:
        return
    for stage in old:
        shutil.rmtree(run.stage_dir(stage), ignore_errors=True)
        del manifest["stages"][stage]
    write_json(run.manifest_path, manifest)


def run_sweep(inputs: ExperimentInputs) -> dict[str, Any]:
    recipe, run, ctx = inputs.recipe, inputs.run, inputs.ctx
    field = recipe.sweep.set
    base = f"sweep/{slug(field)}"
    retire_stage_points(run, base)
    trials = sweep_trials(inputs)
    ctx.print(f"[bold cyan]sweep[/] {escape(field)}: {len(trials)} points as trials "
              f"({(inputs.trials or LocalBackend()).name} backend)")
    outcomes = (inputs.trials or LocalBackend()).run(trials, inputs.pipeline, ctx, resume=inputs.resume)
    teacher_acc = run.stage_record(TEACHER)["test"]["accuracy"]
    rows, students = [], []
    for value, trial, outcome in zip(recipe.sweep.values, trials, outcomes):
        rows.append(_point_row(inputs, value, trial, outcome))
        if outcome.ok:
            students.append(Member(RunDir(trial.root), "student", f"{base}/{trial.root.name}/student"))

    out_dir = run.root / base
    payload = {"field": field, "teacher_test_accuracy": teacher_acc, "points": rows}
    write_report(out_dir, "sweep", payload,
                 ["value", "KD acc", "KD NLL", "KD ECE", "baseline acc", "params"],
                 [_table_row(r) for r in rows], f"Sweep of {field} ({recipe.name})")
    done = [r for r in rows if r["student"]]
    values = [r["value"] for r in done]
    series = {"KD student": (values, [r["student"]["accuracy"] for r in done])}
    if done and all(r["baseline"] for r in done):
        series["no-KD baseline"] = (values, [r["baseline"]["accuracy"] for r in done])
    line_plot(series, out_dir / "sweep.png", title=f"{recipe.name}: test accuracy vs {field}",
              xlabel=field, ylabel="test accuracy", hlines={"teacher": teacher_acc})
    ctx.print(f"[green]sweep[/]: {len(done)} of {len(rows)} students -> {escape(str(out_dir / 'sweep.md'))}")
    if recipe.sweep.ensemble and students:
        payload["ensemble"] = run_ensemble(inputs, students, out_dir)
    if recipe.sweep.mc_dropout and students:
        labels = [point_label(r["value"]) for r in done]
        payload["uncertainty"] = run_uncertainty(inputs, dict(zip(labels, students)), out_dir)
    failed = [r for r in rows if r["error"]]
    if failed:
        errors = "; ".join(f"{point_label(r['value'])}: {r['error']}" for r in failed)
        raise TrialsFailed(f"sweep of {field}: {len(failed)} of {len(rows)} points failed ({errors}); the "
                           f"others are in {out_dir / 'sweep.md'}; rerun to retry the failed ones (finished "
                           "points are reused)")
    return payload


def _point_row(inputs: ExperimentInputs, value: Any, trial: Trial, outcome: TrialOutcome) -> dict[str, Any]:
    row = {"value": value, "run": str(trial.root.relative_to(inputs.run.root)), "student": None, "baseline": None,
           "student_parameters": None, "train_time_s": None, "error": outcome.error}
    if not outcome.ok:
        return row
    point = RunDir(trial.root)
    student = point.stage_record("student")
    if trial.recipe["distill"]["baseline"]:
        baseline = point.stage_record(BASELINE)
    elif shares_baseline(inputs.recipe.sweep.set) and inputs.recipe.distill.baseline:
        baseline = inputs.run.stage_record(BASELINE)
    else:
        baseline = None
    return {**row, "student": student["test"], "baseline": baseline["test"] if baseline else None,
            "student_parameters": student["parameters"], "train_time_s": student["train_time_s"]}


def _table_row(row: dict[str, Any]) -> list[Any]:
    if row["error"]:
        return [point_label(row["value"]), f"failed: {row['error']}", "—", "—", "—", "—"]
    student, baseline = row["student"], row["baseline"]
    return [point_label(row["value"]), student["accuracy"], student["nll"], student["ece"],
            baseline["accuracy"] if baseline else "—", row["student_parameters"]]
