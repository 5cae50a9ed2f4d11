"""Seeds: one run per seed (`<name>_seed<N>`, each a trial), then teacher, no-KD baseline and KD student
(and, where the runs have them, the calibrated-temperature sweep student and the QAT-KD student) as
mean ± std over the seeds, written as JSON + Markdown. `kdedge distill --seeds` and bench/kd_seeds.py
both build their reports here.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from kdedge.errors import KdedgeError
from kdedge.io import write_json, write_text
from kdedge.markdown import markdown_table
from kdedge.recipe import Recipe, recipe_from_dict
from kdedge.run import RunDir, machine_info, package_versions
from kdedge.stages.context import StageContext
from kdedge.trials.trial import Stage, Trial, TrialsFailed

TARGET_GAP_CLOSED = 0.40
ROLES = {"teacher": "teacher", "baseline": "no-KD baseline", "kd": "KD student",
         "kd_calibrated": "KD student, T = T* (calibrated teacher)", "student_qat": "QAT-KD student (fake INT8)"}
METRICS = ("accuracy", "nll", "ece")


def parse_seeds(spec: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (distinct non-negative integers, in the order given)."""
    try:
        seeds = [int(item) for item in spec.split(",") if item.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise KdedgeError(f"--seeds {spec!r}: give distinct non-negative integers separated by commas, e.g. 0,1,2")
    return seeds


def seeded(recipe: Recipe, seed: int, source: str, **updates: Any) -> Recipe:
    """The recipe of one seed: its seed set, its run named `<name>_seed<N>`, and `section.key` updates."""
    raw = recipe.to_dict()
    raw.update(seed=seed, name=f"{recipe.name}_seed{seed}")
    for dotted, value in updates.items():
        section, key = dotted.split(".")
        raw[section] = {**raw[section], key: value}
    return recipe_from_dict(raw, source=f"{source} (seed {seed})")


def seeds_dir(recipe: Recipe) -> Path:
    return recipe.output_dir / f"{recipe.name}_seeds"


def stage_test(run: RunDir, stage: str) -> dict[str, Any]:
    record = run.stage_record(stage)
    if record is None or "test" not in record:
        raise KdedgeError(f"{run.root}: stage {stage!r} missing; rerun that seed")
    return {**record["test"], "parameters": record.get("parameters"), "train_time_s": record.get("train_time_s")}


def calibrated_sweep_student(run: RunDir) -> tuple[RunDir, str] | None:
    """The student of the run's sweep point `temperature: calibrated`, if its sweep has one (each sweep
    point is a run of its own under the run's sweep/<field>/ directory, listed in sweep.json)."""
    for report in sorted(run.root.glob("sweep/*/sweep.json")):
        try:
            points = json.loads(report.read_text(encoding="utf-8")).get("points", [])
        except (OSError, ValueError):
            continue
        for point in points:
            if point.get("value") == "calibrated" and point.get("student") and point.get("run"):
                return RunDir(run.root / point["run"]), "student"
    return None


def seed_record(seed: int, run: RunDir, teacher_run: Path | None = None) -> dict[str, Any]:
    """One seed's test metrics by role, read from its finished run."""
    manifest = run.read_manifest()
    record = {"seed": seed, "teacher_run": str(teacher_run or run.root), "kd_run": str(run.root),
              "teacher_temperature": manifest.get("temperatures", {}),
              "teacher": stage_test(run, "teacher"), "baseline": stage_test(run, "baseline"),
              "kd": stage_test(run, "student")}
    calibrated = calibrated_sweep_student(run)
    if calibrated is not None:
        record["kd_calibrated"] = stage_test(*calibrated)
    if "student_qat" in manifest.get("stages", {}):
        record["student_qat"] = stage_test(run, "student_qat")
    return record


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    roles = [r for r in ROLES if all(r in s for s in per_seed)]
    stats = {role: {metric: mean_std([s[role][metric] for s in per_seed]) for metric in METRICS} for role in roles}
    acc = {role: stats[role]["accuracy"]["mean"] for role in roles}
    gap = acc["teacher"] - acc["baseline"]
    closed = {role: (acc[role] - acc["baseline"]) / gap if gap > 0 else None
              for role in roles if role not in ("teacher", "baseline")}
    return {"stats": stats, "teacher_baseline_gap": gap, "gap_closed": closed,
            "kd_beats_baseline": acc["kd"] > acc["baseline"],
            "calibrated_vs_vanilla": acc["kd_calibrated"] - acc["kd"] if "kd_calibrated" in acc else None,
            "target_gap_closed": TARGET_GAP_CLOSED}


def markdown(result: dict[str, Any]) -> str:
    stats, summary = result["summary"]["stats"], result["summary"]
    names = {role: label for role, label in ROLES.items() if role in stats}

    def pm(role: str, metric: str, scale: float = 1.0, digits: int = 2) -> str:
        s = stats[role][metric]
        return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"

    rows = [[names[r], pm(r, "accuracy", 100), pm(r, "nll", 1, 4), pm(r, "ece", 1, 4),
             result["per_seed"][0][r]["parameters"]] for r in names]
    lines = [f"# KD over {len(result['seeds'])} seeds: {result['kd_recipe']}", "",
             markdown_table(["model", "test accuracy %", "NLL", "ECE", "parameters"], rows), "",
             f"- teacher − baseline gap: {summary['teacher_baseline_gap'] * 100:.2f} pt"]
    for role, share in summary["gap_closed"].items():
        lines.append(f"- share of the gap closed by {names[role]}: {share * 100:.1f} %" if share is not None
                     else f"- {names[role]}: no gap to close")
    lines.append(f"- target for KD: ≥ {TARGET_GAP_CLOSED * 100:.0f} % of the gap")
    if summary["calibrated_vs_vanilla"] is not None:
        lines.append(f"- calibrated − vanilla KD: {summary['calibrated_vs_vanilla'] * 100:+.2f} pt")
    failed = result.get("failed_seeds") or {}
    for seed, error in failed.items():
        lines.append(f"- seed {seed} failed: {error}")
    lines += ["", "Per seed (test accuracy %, T*):", "",
              markdown_table(["seed", *names.values(), "T*"],
                             [[s["seed"], *(f"{s[r]['accuracy'] * 100:.2f}" for r in names),
                               s["teacher_temperature"].get("teacher")] for s in result["per_seed"]])]
    return "\n".join(lines) + "\n"


def run_seeds(recipe: Recipe, source: str, seeds: list[int], backend: Any, stage: Stage, ctx: StageContext, *,
              resume: bool) -> tuple[dict[str, Any], Path]:
    """One run per seed through `backend` (each `stage`, e.g. the distill pipeline), then the mean ± std
    report of the seeds that finished, written to <output_dir>/<name>_seeds/seeds.json and .md. A failed
    seed is named in the report, and TrialsFailed is raised after it is written."""
    if recipe.distill is None or not recipe.distill.baseline:
        raise KdedgeError(f"{source}: --seeds compares the teacher, the no-KD baseline and the KD student; the "
                          "recipe needs a distill: section with baseline: true")
    trials = [Trial.of(f"seed {seed}", seeded(recipe, seed, source)) for seed in seeds]
    outcomes = backend.run(trials, stage, ctx, resume=resume)
    per_seed = [seed_record(seed, RunDir(o.root)) for seed, o in zip(seeds, outcomes) if o.ok]
    failed = {seed: o.error for seed, o in zip(seeds, outcomes) if not o.ok}
    if not per_seed:
        raise TrialsFailed(f"{source}: every seed failed ({'; '.join(f'seed {s}: {e}' for s, e in failed.items())})")
    result = {"kd_recipe": source, "seeds": [s["seed"] for s in per_seed], "failed_seeds": failed,
              "per_seed": per_seed, "summary": summarise(per_seed), "machine": machine_info(),
              "versions": package_versions()}
    out = seeds_dir(recipe) / "seeds.json"
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown(result))
    if failed:
        raise TrialsFailed(f"{source}: {len(failed)} of {len(seeds)} seeds failed "
                           f"({'; '.join(f'seed {s}: {e}' for s, e in failed.items())}); the others are in {out}; "
                           "rerun to retry the failed ones (finished seeds are reused)")
    return result, out
