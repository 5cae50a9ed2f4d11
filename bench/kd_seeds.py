"""KD vs no-KD baseline vs calibrated-teacher KD, mean +- std over seeds, on real data.

For each seed: train the teacher recipe (run `<name>_seed<N>`), then run the KD recipe with its
teacher.from_run pointed at that teacher (run `<name>_seed<N>`): teacher calibration, KD student,
no-KD baseline and, through the recipe's sweep, the calibrated-temperature student. Finished runs
are reused, so an interrupted benchmark continues where it stopped. Writes JSON + Markdown.
The runs, the per-seed records and the summary are kdedge's own (kdedge.trials: what
`kdedge distill RECIPE --seeds 0,1,2` does for a recipe that trains its own teacher).

    python bench/kd_seeds.py                                  # seeds 0 1 2, the shipped FMNIST recipes
    python bench/kd_seeds.py --seeds 0 1 2 --teacher recipes/fmnist_cnn_teacher.yaml \
        --kd recipes/fmnist_kd_mlp.yaml --out bench/results/kd_seeds.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from kdedge.io import write_result
from kdedge.recipe import load_recipe
from kdedge.run import RunDir, machine_info, package_versions
from kdedge.stages.context import StageContext
from kdedge.stages.distill import distill
from kdedge.stages.teacher import train_teacher
from kdedge.trials import Trial, run_trial
from kdedge.trials.seeds import markdown, seed_record, seeded, summarise

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _run(trial: Trial, stage, ctx: StageContext) -> Path:
    outcome = run_trial(trial, stage, ctx, resume=True)
    if not outcome.ok:
        raise SystemExit(f"{trial.root}: {trial.name} failed: {outcome.error}")
    return outcome.root


def run_seed(seed: int, teacher_file: Path, kd_file: Path, ctx: StageContext,
             shared_teacher: Path | None = None) -> dict[str, Any]:
    if shared_teacher is None:
        teacher_recipe = seeded(load_recipe(teacher_file), seed, str(teacher_file))
        teacher_root = _run(Trial.of(f"teacher, seed {seed}", teacher_recipe), train_teacher, ctx)
    else:  # one teacher for every seed: the seeds vary the student (its init, order, dropout) only
        teacher_root = shared_teacher
    kd_base = load_recipe(kd_file, require_runs=False)
    kd_recipe = seeded(kd_base, seed, str(kd_file), **{"teacher.from_run": str(teacher_root)})
    kd_root = _run(Trial.of(f"KD, seed {seed}", kd_recipe), distill, ctx)
    return seed_record(seed, RunDir(kd_root), teacher_root)


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
