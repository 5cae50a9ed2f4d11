"""Stage: train the teacher into <run>/teacher/ (or reuse a finished one)."""

from __future__ import annotations

from typing import Any

from kdedge.io import write_bytes
from kdedge.layout import (METRICS_FILE, MODEL_FILE, RELIABILITY_FILE, TEACHER as STAGE, TEMPERATURE_FILE,
                           finished_record)
from kdedge.recipe import Recipe
from kdedge.run import PlannedRun, RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData, check_same_data, prepare_data
from kdedge.stages.roles import RoleJob, resume_state_for, train_role
from kdedge.train import supervised_step


def train_teacher(recipe: Recipe, planned: PlannedRun, ctx: StageContext, *, resume: bool = False,
                  data: PreparedData | None = None) -> dict[str, Any]:
    """Train the teacher, or reuse a finished one. `data` may be passed when already loaded."""
    record = finished_record(planned.run, STAGE, exists=planned.exists)
    if record:
        ctx.print(f"[green]teacher[/]: reusing the finished teacher in {planned.run.stage_dir(STAGE)} "
                  f"(test accuracy {record['test']['accuracy']:.4f}); pass --force to retrain")
        return record
    if recipe.teacher.from_run is not None:
        return import_teacher(recipe, planned, ctx, data)
    fingerprint = f"{recipe.hash}:{STAGE}"
    resume_state = resume_state_for(planned.run, STAGE, fingerprint, resume=resume, exists=planned.exists)
    device = ctx.device(recipe.device)
    data = data or prepare_data(recipe, ctx.data_roots)
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
                   data: PreparedData | None) -> dict[str, Any]:
    """Copy the finished teacher of teacher.from_run into this run, after checking it saw the same data,
    so this run stays self-contained (export and bench read only their own run directory)."""
    source = RunDir(recipe.teacher.from_run)
    theirs = source.read_manifest()
    data = data or prepare_data(recipe, ctx.data_roots)
    check_same_data(theirs.get("data"), data, source.manifest_path)
    run = planned.create()
    for name in IMPORTED_FILES:
        src = source.stage_dir(STAGE) / name
        if src.is_file():
            write_bytes(run.stage_dir(STAGE) / name, src.read_bytes())
    record = {**theirs["stages"][STAGE], "imported_from": str(source.root)}
    extra = {}
    if "calibration" in theirs.get("stages", {}):
        extra = {"temperatures": theirs.get("temperatures", {}),
                 "stages": {STAGE: record, "calibration": theirs["stages"]["calibration"]}}
    run.update_manifest(data=data.describe(), **(extra or {"stages": {STAGE: record}}))
    ctx.print(f"[green]teacher[/]: imported the finished teacher of {source.root} "
              f"(test accuracy {record['test']['accuracy']:.4f})")
    return record
