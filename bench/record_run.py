"""Record a finished run's measured numbers (accuracy, calibration, timings, machine) as JSON.

    python bench/record_run.py runs/fmnist_teacher            # -> bench/results/fmnist_teacher.json
    python bench/record_run.py runs/fmnist_teacher --out x.json

The numbers come from the run's own files (manifest, metrics, calibration); nothing is recomputed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdedge.io import write_json
from kdedge.run import RunDir, machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    run = RunDir(args.run)
    manifest = run.read_manifest()
    teacher_dir = run.stage_dir("teacher")
    metrics = json.loads((teacher_dir / "metrics.json").read_text())
    calibration_path = teacher_dir / "calibration.json"
    calibration = json.loads(calibration_path.read_text()) if calibration_path.exists() else None
    record = {
        "run": manifest["recipe"]["name"], "recipe_file": manifest.get("recipe_file"),
        "recipe_hash": manifest["recipe_hash"], "recipe": manifest["recipe"], "data": manifest.get("data"),
        "teacher": {k: metrics[k] for k in ("model", "parameters", "epochs", "train_time_s", "wall_time_s",
                                            "device", "train", "val", "test")},
        "per_epoch": [{k: h[k] for k in ("epoch", "train_accuracy", "val_accuracy", "test_accuracy",
                                          "epoch_time_s", "train_images_per_s")} for h in metrics["history"]],
        "calibration": None if calibration is None else {
            "temperature": calibration["temperature"], "fitted_on": calibration["fitted_on"],
            "before": calibration["before"], "after": calibration["after"]},
        "machine": machine_info(), "versions": manifest["versions"],
    }
    out = args.out or RESULTS / f"{record['run']}.json"
    write_json(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
