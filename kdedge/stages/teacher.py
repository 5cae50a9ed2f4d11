"""Stage: train the teacher into <run>/teacher/ (or reuse a finished one)."""

from __future__ import annotations

from typing import Any

from kdedge.recipe import Recipe
from kdedge.run import PlannedRun
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData, check_same_data, prepare_data
from kdedge.stages.roles import MODEL_FILE, RoleJob, finished_record, resume_state_for, train_role
from kdedge.train import supervised_step

STAGE = "teacher"
__all__ = ["MODEL_FILE", "STAGE", "train_teacher"]


def train_teacher(recipe: Recipe, planned: PlannedRun, ctx: StageContext, *, resume: bool = False,
                  data: PreparedData | None = None) -> dict[str, Any]:
    """Train the teacher, or reuse a finished one. `data` may be passed when already loaded."""
    record = finished_record(planned.run, STAGE, exists=planned.exists)
    if record:
        ctx.print(f"[green]teacher[/]: reusing the finished teacher in {planned.run.stage_dir(STAGE)} "
                  f"(test accuracy {record['test']['accuracy']:.4f}); pass --force to retrain")
        return record
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
