"""Where a run keeps what: the stage names, their file names, and which models are finished.

One place for the layout that every command shares; it imports nothing heavy, so `kdedge bench`
(and a Jetson that only measures) can read a run without the training stack.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
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
# a teacher brought by the user is kept in its own form: a torch.export program or an ONNX file
EXPORTED_MODEL_FILE, ONNX_MODEL_FILE = "model.pt2", "model.onnx"
MODEL_FILES = (MODEL_FILE, EXPORTED_MODEL_FILE, ONNX_MODEL_FILE)
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
TEMPERATURE_FILE = "calibration.json"  # the teacher's temperature T* (name kept: runs made before read it)
RELIABILITY_FILE = "reliability.png"
MODEL_SHA256 = "model_sha256"  # stage record field: the checksum of model.pt, checked before every load

# directories of the run made after training
EXPORT_DIR = "exports"
BENCH_DIR = "bench"


def run_file(run_root: Path, relative: Any, *, what: str, must_exist: bool = True) -> Path:
    """`relative` (a path read from a manifest) as a path inside `run_root`, or a one-line error.

    A manifest is data a user may have been handed: a `file` entry such as `../../x` or `/etc/passwd`
    must not make kdedge read (or, for `bench --host`, overwrite) a file outside the run. Accepted: a
    relative POSIX path without `..` whose resolved target stays inside the run and is a regular file
    (a symlink is refused: what it points at can change after this check). With `must_exist=False` the
    file may be absent (it is about to be written), but its parent must still resolve inside the run.
    """
    root = Path(run_root).resolve()
    manifest = Path(run_root) / "manifest.json"

    def refuse(why: str) -> KdedgeError:
        return KdedgeError(f"{manifest}: {what} = {relative!r} {why}; only files inside the run directory "
                           f"{root} are used: restore the run's manifest or rerun the stage that wrote it")

    if not isinstance(relative, str) or not relative or "\x00" in relative or "\\" in relative:
        raise refuse("is not a relative file path")
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts or relative.endswith("/"):
        raise refuse("points outside the run directory")
    path = root.joinpath(*parts)
    try:
        resolved_parent = path.parent.resolve(strict=must_exist)
        info = os.lstat(path)
    except FileNotFoundError:
        if must_exist:
            raise refuse("does not exist") from None
        info = None
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror})") from None
    if resolved_parent != root and root not in resolved_parent.parents:
        raise refuse("points outside the run directory (through a symlink)")
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise refuse("is a symlink, not a regular file")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise refuse("is not a regular file")
    return resolved_parent / path.name


def model_path(run: "RunDir", stage: str) -> Path:
    return run.stage_dir(stage) / MODEL_FILE


def model_file(run: "RunDir", stage: str) -> tuple[Path, str | None]:
    """(<run>/<stage>/model.pt, the SHA-256 its stage record holds). The path is a regular file inside the
    run or absent (the loader then says how to rebuild it); the checksum is None for runs made before
    kdedge recorded it, which are accepted as they are."""
    record = run.stage_record(stage) or {}
    name = record.get("model_file", MODEL_FILE)
    if name not in MODEL_FILES:  # a damaged or hand-edited manifest names no other file of the run
        raise KdedgeError(f"{run.manifest_path}: stages.{stage}.model_file {name!r} is not one of "
                          f"{', '.join(MODEL_FILES)}; the manifest is damaged, rerun the recipe with --force")
    path = run_file(run.root, f"{stage}/{name}", what=f"stages.{stage} model file", must_exist=False)
    sha = record.get(MODEL_SHA256)
    return path, (None if sha is None else str(sha))


def verified_model_file(run: "RunDir", stage: str) -> Path:
    """model_file's path once its bytes match the recorded SHA-256 (for copying it elsewhere unread)."""
    from kdedge.io import sha256_file

    path, sha = model_file(run, stage)
    if not path.is_file():
        raise KdedgeError(f"{path}: missing; rerun the stage that makes it (`kdedge distill RECIPE`)")
    if sha is not None and sha256_file(path) != sha:
        raise KdedgeError(f"{path}: changed since it was written (its SHA-256 is not the one in "
                          f"{run.manifest_path}); retrain it: `kdedge distill RECIPE --force` ({stage})")
    return path


def finished_record(run: "RunDir", stage: str, *, exists: bool = True) -> dict[str, Any] | None:
    """The manifest record of a finished stage whose model file is present, else None."""
    if not exists:
        return None
    record = run.stage_record(stage)
    if record and record.get("status") == "complete" and model_file(run, stage)[0].is_file():
        return record
    return None


def stale_fingerprint(run: "RunDir", stage: str, record: dict[str, Any], fingerprint: str) -> None:
    """Refuse to reuse a finished stage whose recorded fingerprint is not the current recipe's (a record
    without one comes from a run made before kdedge recorded it: its recipe hash was checked instead)."""
    recorded = record.get("fingerprint")
    if recorded is not None and recorded != fingerprint:
        raise KdedgeError(f"{run.stage_dir(stage)}: holds a {stage} trained by another recipe (fingerprint "
                          f"{recorded}, this recipe's is {fingerprint}), so it is not reused; pass --force to "
                          "train the run afresh, or change the recipe's name")


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
