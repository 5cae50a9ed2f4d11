"""Stage: train the teacher into <run>/teacher/ (or reuse a finished one)."""

from __future__ import annotations

import hashlib
from typing import Any

from rich.markup import escape

from kdedge.errors import KdedgeError
from kdedge.io import write_bytes
from kdedge.layout import (METRICS_FILE, MODEL_FILE, MODEL_SHA256, RELIABILITY_FILE, TEACHER as STAGE,
                           TEMPERATURE_FILE, finished_record, run_file, stale_fingerprint, verified_model_file)
from kdedge.recipe import Recipe
from kdedge.run import PlannedRun, RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData, check_same_data, prepare_data
from kdedge.stages.foreign_teacher import changed_teacher_file, import_foreign_teacher, source_fingerprint
from kdedge.stages.roles import RoleJob, resume_state_for, train_role
from kdedge.train import supervised_step


def train_teacher(recipe: Recipe, planned: PlannedRun, ctx: StageContext, *, resume: bool = False,
                  data: PreparedData | None = None) -> dict[str, Any]:
    """Train the teacher, or reuse a finished one. `data` may be passed when already loaded."""
    fingerprint = f"{recipe.hash}:{STAGE}"
    if recipe.teacher.source is not None:
        fingerprint += f":{source_fingerprint(recipe)}"  # other weights in the same file name: another teacher
    record = finished_record(planned.run, STAGE, exists=planned.exists)
    if record:
        if recipe.teacher.source is not None:
            changed_teacher_file(recipe, record, planned.run.root)  # named as such, before the fingerprint
        stale_fingerprint(planned.run, STAGE, record, fingerprint)  # reuse only what this recipe would train
        verified_model_file(planned.run, STAGE)  # and only the bytes that were written
        again = "read it again" if "source" in record else "retrain"
        ctx.print(f"[green]teacher[/]: reusing the finished teacher in {escape(str(planned.run.stage_dir(STAGE)))} "
                  f"(test accuracy {record['test']['accuracy']:.4f}); pass --force to {again}")
        return record
    if recipe.teacher.from_run is not None:
        return import_teacher(recipe, planned, ctx, data, fingerprint)
    if recipe.teacher.source is not None:
        data = data or _load_data(recipe, ctx)
        if planned.exists:
            check_same_data(planned.run.read_manifest().get("data"), data, planned.run.manifest_path)
        return import_foreign_teacher(recipe, planned, ctx, data, fingerprint,
                                      source=str(planned.recipe_file or f"recipe {recipe.name}"))
    resume_state = resume_state_for(planned.run, STAGE, fingerprint, resume=resume, exists=planned.exists)
    device = ctx.device(recipe.device)
    data = data or _load_data(recipe, ctx)
    if planned.exists:
        check_same_data(planned.run.read_manifest().get("data"), data, planned.run.manifest_path)
    run = planned.create()  # only now: a data error leaves nothing behind
    run.update_manifest(data=data.describe())
    cfg = recipe.teacher.train
    job = RoleJob(stage=STAGE, role="teacher", config=recipe.teacher, training=data.training,
                  make_step=lambda model: (supervised_step(model, label_smoothing=cfg.label_smoothing), None),
                  fingerprint=fingerprint, seed=recipe.seed)
    return train_role(job, run=run, data=data, ctx=ctx, device=device, resume_state=resume_state)


IMPORTED_FILES = (MODEL_FILE, METRICS_FILE, TEMPERATURE_FILE, RELIABILITY_FILE)


def import_teacher(recipe: Recipe, planned: PlannedRun, ctx: StageContext,
                   data: PreparedData | None, fingerprint: str) -> dict[str, Any]:
    """Copy the finished teacher of teacher.from_run into this run, after checking it saw the same data,
    so this run stays self-contained (export and bench read only their own run directory)."""
    source = RunDir(recipe.teacher.from_run)
    theirs = source.read_manifest()
    data = data or _load_data(recipe, ctx)
    check_same_data(theirs.get("data"), data, source.manifest_path)
    files = _source_files(source)  # read (and the model verified) before anything is written here
    run = planned.create()
    for name, content in files.items():
        write_bytes(run.stage_dir(STAGE) / name, content)
    # the copy's own checksum (a source made before kdedge recorded one gets it now), and this recipe's
    # fingerprint, so that a rerun reuses the import; the source's stays beside it
    record = {**theirs["stages"][STAGE], "imported_from": str(source.root),
              MODEL_SHA256: hashlib.sha256(files[MODEL_FILE]).hexdigest(), "fingerprint": fingerprint,
              "imported_fingerprint": theirs["stages"][STAGE].get("fingerprint")}
    extra = {}
    if "calibration" in theirs.get("stages", {}):
        extra = {"temperatures": theirs.get("temperatures", {}),
                 "stages": {STAGE: record, "calibration": theirs["stages"]["calibration"]}}
    run.update_manifest(data=data.describe(), **(extra or {"stages": {STAGE: record}}))
    ctx.print(f"[green]teacher[/]: imported the finished teacher of {escape(str(source.root))} "
              f"(test accuracy {record['test']['accuracy']:.4f})")
    return record


def _source_files(source: RunDir) -> dict[str, bytes]:
    """The teacher files of another run, each a regular file inside it, the model checked against the
    SHA-256 its run recorded (where it recorded one)."""
    out = {}
    for name in IMPORTED_FILES:
        path = run_file(source.root, f"{STAGE}/{name}", what=f"stages.{STAGE} file {name}", must_exist=False)
        if path.is_file():
            out[name] = path.read_bytes()
    expected = (source.stage_record(STAGE) or {}).get(MODEL_SHA256)
    if MODEL_FILE not in out:
        raise KdedgeError(f"{source.stage_dir(STAGE) / MODEL_FILE}: missing; teacher.from_run needs a finished "
                          "teacher there (rerun `kdedge train` on that recipe)")
    if expected is not None and hashlib.sha256(out[MODEL_FILE]).hexdigest() != expected:
        raise KdedgeError(f"{source.stage_dir(STAGE) / MODEL_FILE}: changed since it was written (its SHA-256 is "
                          f"not the one in {source.manifest_path}); retrain that teacher or point "
                          "teacher.from_run at another run")
    return out


def _load_data(recipe: Recipe, ctx: StageContext) -> PreparedData:
    """The recipe's data, its notes shown (distill loads the data and shows them itself)."""
    data = prepare_data(recipe, ctx.data_roots)
    ctx.notes(data.notes)
    return data
