"""Where a run keeps what: the stage names, their file names, and which models are finished.

One place for the layout that every command shares; it imports nothing heavy, so `kdedge bench`
(and a Jetson that only measures) can read a run without the training stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdedge.errors import KdedgeError

if TYPE_CHECKING:
    from kdedge.run import RunDir

# stages that hold a model (directories under the run, keys of manifest["stages"])
TEACHER = "teacher"
STUDENT = "student"
BASELINE = "baseline"          # the student's architecture trained on hard labels only
QAT_STUDENT = "student_qat"    # the student with INT8 fake quant, trained by QAT-KD
MODEL_STAGES = (TEACHER, STUDENT, BASELINE, QAT_STUDENT)

# files inside a stage directory
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
TEMPERATURE_FILE = "calibration.json"  # the teacher's temperature T* (name kept: runs made before read it)
RELIABILITY_FILE = "reliability.png"

# directories of the run made after training
EXPORT_DIR = "exports"
BENCH_DIR = "bench"


def model_path(run: "RunDir", stage: str) -> Path:
    return run.stage_dir(stage) / MODEL_FILE


def finished_record(run: "RunDir", stage: str, *, exists: bool = True) -> dict[str, Any] | None:
    """The manifest record of a finished stage whose model file is present, else None."""
    if not exists:
        return None
    record = run.stage_record(stage)
    if record and record.get("status") == "complete" and model_path(run, stage).is_file():
        return record
    return None


def finished_models(run: "RunDir") -> list[str]:
    """The model stages of `run` that finished, in MODEL_STAGES order."""
    return [stage for stage in MODEL_STAGES if finished_record(run, stage)]


def requested_models(run: "RunDir", requested: list[str]) -> list[str]:
    """`--models` checked against the finished models of `run`, in MODEL_STAGES order."""
    finished = finished_models(run)
    for name in requested:
        if name not in MODEL_STAGES:
            raise KdedgeError(f"--models {name!r}: unknown model; valid: {', '.join(MODEL_STAGES)}")
        if name not in finished:
            raise KdedgeError(f"--models {name!r}: {run.root} has no finished {name}; "
                              f"finished here: {', '.join(finished) or 'none'}")
    return [stage for stage in MODEL_STAGES if stage in requested]
