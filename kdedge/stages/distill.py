"""Stage: distil the teacher into the student, and train the no-KD baseline beside it.

    teacher (train or reuse) -> [temperature T*] -> transfer set -> student (KD) + baseline (hard labels only)
      -> [QAT-KD student] -> [experiments: chain, symmetry, sweep]

The baseline is the same architecture with the same budget and seed on the same images, so every KD
number is reported next to what the student reaches without the teacher. This module is only the
pipeline: its building blocks are in stages/students.py (shared with quant and the experiments), and
nothing but the CLI imports it.
"""

from __future__ import annotations

from typing import Any

from kdedge.errors import KdedgeError
from kdedge.layout import BASELINE, STUDENT, TEACHER
from kdedge.stage_model import load_stage_model
from kdedge.quant.modelopt_backend import require_modelopt
from kdedge.recipe import Recipe
from kdedge.run import PlannedRun
from kdedge.stages.context import StageContext
from kdedge.stages.data import check_same_data, prepare_data
from kdedge.stages.experiments import ExperimentInputs, run_chain, run_symmetry
from kdedge.stages.quant import train_qat_student
from kdedge.stages.sweep import run_sweep
from kdedge.stages.students import (build_transfer_set, distill_student, kd_terms, teacher_temperature,
                                    train_baseline, transfer_subset)
from kdedge.stages.teacher import train_teacher


def distill(recipe: Recipe, planned: PlannedRun, ctx: StageContext, *, resume: bool = False,
            trials: Any = None) -> dict[str, Any]:
    """Run the whole chain for a recipe with a distill: section; returns the manifest's stage records.
    `trials` is the backend that runs the sweep's points (kdedge.trials; None = one after another here)."""
    if recipe.distill is None or recipe.student is None:
        raise KdedgeError(f"recipe {recipe.name!r} has no distill: and student: sections; "
                          "add them (see recipes/demo.yaml) or use `kdedge train`")
    data = prepare_data(recipe, ctx.data_roots)
    ctx.notes(data.notes)
    if planned.exists:
        check_same_data(planned.run.read_manifest().get("data"), data, planned.run.manifest_path)
    transfer_images = transfer_subset(recipe, data)  # checked before anything is trained or written
    if recipe.quant is not None:
        require_modelopt()  # a missing optional backend fails now, not after the teacher and student
    train_teacher(recipe, planned, ctx, resume=resume, data=data)
    run = planned.run
    temperature = teacher_temperature(recipe, run, ctx, data)
    device = ctx.device(recipe.device)
    teacher, _ = load_stage_model(run, TEACHER, fix="retrain it with `kdedge distill RECIPE --force`")
    teacher.to(device).eval()
    terms = kd_terms(recipe, temperature)
    transfer = build_transfer_set(recipe, data, transfer_images, teacher, device)
    distill_student(recipe, run, ctx, data=data, transfer=transfer, teacher=teacher, terms=terms,
                    student=recipe.student, stage=STUDENT, device=device, resume=resume,
                    temperature=temperature)
    if recipe.distill.baseline:
        train_baseline(recipe, run, ctx, data=data, transfer=transfer, student=recipe.student, stage=BASELINE,
                       device=device, resume=resume)
    if recipe.quant is not None:
        train_qat_student(recipe, run, ctx, data=data, transfer=transfer, teacher=teacher, terms=terms,
                          device=device, resume=resume, temperature=temperature)
    if recipe.sweep or recipe.chain or recipe.symmetry or recipe.quant:
        run.update_manifest(recipe=recipe.to_dict())  # the experiment sections in force for these results
    if recipe.sweep or recipe.chain or recipe.symmetry:
        inputs = ExperimentInputs(recipe=recipe, run=run, ctx=ctx, data=data, teacher=teacher,
                                  temperature=temperature, device=device, resume=resume, trials=trials,
                                  pipeline=distill)
        if recipe.chain:
            run_chain(inputs, transfer)
        if recipe.symmetry:
            run_symmetry(inputs, transfer)
        if recipe.sweep:
            run_sweep(inputs)
    return run.read_manifest()["stages"]
