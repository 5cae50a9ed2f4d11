"""KD vs no-KD baseline vs calibrated-teacher KD, mean +- std over seeds, on real data.

For each seed: train the teacher recipe (run `<name>_seed<N>`), then run the KD recipe with its
teacher.from_run pointed at that teacher (run `<name>_seed<N>`): teacher calibration, KD student,
no-KD baseline and, through the recipe's sweep, the calibrated-temperature student. Finished runs
are reused, so an interrupted benchmark continues where it stopped. Writes JSON + Markdown.

    python bench/kd_seeds.py                                  # seeds 0 1 2, the shipped FMNIST recipes
    python bench/kd_seeds.py --seeds 0 1 2 --teacher recipes/fmnist_cnn_teacher.yaml \
        --kd recipes/fmnist_kd_mlp.yaml --out bench/results/kd_seeds.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from kdedge.io import write_result
from kdedge.markdown import markdown_table
from kdedge.recipe import Recipe, load_recipe, recipe_from_dict
from kdedge.run import RunDir, machine_info, open_run, package_versions
from kdedge.stages.context import StageContext
from kdedge.stages.distill import distill
from kdedge.stages.teacher import train_teacher

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET_GAP_CLOSED = 0.40
ROLES = {"teacher": "teacher", "baseline": "no-KD baseline", "kd": "KD student",
         "kd_calibrated": "KD student, T = T* (calibrated teacher)", "student_qat": "QAT-KD student (fake INT8)"}


def seeded(recipe: Recipe, seed: int, source: str, **updates: Any) -> Recipe:
    raw = recipe.to_dict()
    raw.update(seed=seed, name=f"{recipe.name}_seed{seed}")
    for dotted, value in updates.items():
        section, key = dotted.split(".")
        raw[section] = {**raw[section], key: value}
    return recipe_from_dict(raw, source=f"{source} (seed {seed})")


def stage_test(run: RunDir, stage: str) -> dict[str, Any]:
    record = run.stage_record(stage)
    if record is None:
        raise SystemExit(f"{run.root}: stage {stage!r} missing")
    return {**record["test"], "parameters": record.get("parameters"), "train_time_s": record.get("train_time_s")}


def run_seed(seed: int, teacher_file: Path, kd_file: Path, ctx: StageContext,
             shared_teacher: Path | None = None) -> dict[str, Any]:
    if shared_teacher is None:
        teacher_recipe = seeded(load_recipe(teacher_file), seed, str(teacher_file))
        planned = open_run(teacher_recipe, teacher_file, force=False)
        train_teacher(teacher_recipe, planned, ctx, resume=True)
        teacher_root = planned.run.root
    else:  # one teacher for every seed: the seeds vary the student (its init, order, dropout) only
        teacher_root = shared_teacher
    kd_base = load_recipe(kd_file, require_runs=False)
    kd_recipe = seeded(kd_base, seed, str(kd_file), **{"teacher.from_run": str(teacher_root)})
    kd_planned = open_run(kd_recipe, kd_file, force=False)
    distill(kd_recipe, kd_planned, ctx, resume=True)
    run = kd_planned.run
    manifest = run.read_manifest()
    # The calibrated-temperature student comes from the recipe's sweep over the temperature, if any.
    sweep_stage = next((s for s in manifest["stages"] if s.startswith("sweep/") and s.endswith("/calibrated/student")),
                       None)
    optional = {"kd_calibrated": sweep_stage, "student_qat": "student_qat" if "student_qat" in manifest["stages"] else None}
    return {
        "seed": seed, "teacher_run": str(teacher_root), "kd_run": str(run.root),
        "teacher_temperature": manifest.get("temperatures", {}),
        "teacher": stage_test(run, "teacher"),
        "baseline": stage_test(run, "baseline"),
        "kd": stage_test(run, "student"),
        **{role: stage_test(run, stage) for role, stage in optional.items() if stage},
    }


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    roles = [r for r in ROLES if all(r in s for s in per_seed)]
    stats = {role: {metric: mean_std([s[role][metric] for s in per_seed]) for metric in ("accuracy", "nll", "ece")}
             for role in roles}
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
    lines += ["", "Per seed (test accuracy %, T*):", "",
              markdown_table(["seed", *names.values(), "T*"],
                             [[s["seed"], *(f"{s[r]['accuracy'] * 100:.2f}" for r in names),
                               s["teacher_temperature"].get("teacher")] for s in result["per_seed"]])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", type=Path, default=ROOT / "recipes" / "fmnist_cnn_teacher.yaml")
    parser.add_argument("--kd", type=Path, default=ROOT / "recipes" / "fmnist_kd_mlp.yaml")
    parser.add_argument("--out", type=Path, default=RESULTS / "kd_seeds.json")
    parser.add_argument("--shared-teacher", type=Path, default=None,
                        help="a finished teacher run used by every seed (else one teacher per seed)")
    args = parser.parse_args()
    ctx = StageContext(console=Console())
    per_seed = [run_seed(seed, args.teacher, args.kd, ctx, args.shared_teacher) for seed in args.seeds]
    result = {"teacher_recipe": str(args.teacher.relative_to(ROOT) if args.teacher.is_relative_to(ROOT) else args.teacher),
              "kd_recipe": str(args.kd.relative_to(ROOT) if args.kd.is_relative_to(ROOT) else args.kd),
              "seeds": args.seeds, "shared_teacher": str(args.shared_teacher) if args.shared_teacher else None,
              "per_seed": per_seed, "summary": summarise(per_seed),
              "machine": machine_info(), "versions": package_versions()}
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
