"""Building blocks of every KD stage: the transfer set, the KD loss terms, a KD student, the baseline.

The distill pipeline (stages/distill.py), QAT-KD (stages/quant.py) and the experiments (sweeps,
chains, symmetry) all train their students through these, so none of them imports another's pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from kdedge.data import ImageData
from kdedge.data.training import TrainingData
from kdedge.data.transfer import reduce_per_class, with_labels
from kdedge.errors import KdedgeError
from kdedge.layout import finished_record, stale_fingerprint, verified_model_file
from kdedge.losses import LOSSES, resolve_temperature
from kdedge.recipe import Recipe, RoleConfig
from kdedge.run import RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData
from kdedge.stages.roles import RoleJob, resume_state_for, train_role
from kdedge.stages.temperature import calibrate_teacher
from kdedge.temperature import T_MAX, T_MIN
from kdedge.train import supervised_step
from kdedge.train.batches import prepare_batch
from kdedge.train.distill_step import (KDTerm, check_mc_terms, feature_cache_fits, make_distill_step, mc_keys,
                                       teacher_outputs)


@dataclass(frozen=True)
class TransferSet:
    """The images the students learn from, as the KD student and the baseline each see them."""

    training: TrainingData      # what the student trains on (labels = pseudo-labels when unlabeled)
    true_labels: TrainingData   # the same images with their real labels (for the baseline)
    description: str


def teacher_temperature(recipe: Recipe, run: RunDir, ctx: StageContext, data: PreparedData) -> float | None:
    """T*, fitted on the validation split, when the recipe calibrates or distils with it."""
    if not (recipe.teacher.calibrate or recipe.uses_calibrated_temperature()):
        return None
    t = run.read_manifest().get("temperatures", {}).get("teacher")
    if t is None:
        t = calibrate_teacher(run, ctx, data)["temperature"]
        ctx.print(f"[cyan]calibration[/]: teacher T* = {t:.4f} (fitted on the validation split)")
        if t in (T_MIN, T_MAX):
            ctx.print(f"[yellow]calibration[/]: T* is at its bound {t}: the validation split gives no interior "
                      "optimum (e.g. every validation image right, or the logits carry no information); with "
                      "temperature: calibrated the students learn from that bound, so check the teacher or use "
                      "a fixed temperature")
    return float(t)


def kd_terms(recipe: Recipe, calibrated: float | None) -> list[KDTerm]:
    """The recipe's KD loss terms, options validated, `temperature: calibrated` resolved to T*."""
    terms = []
    for spec in recipe.distill.losses:
        definition = LOSSES.get(spec.name)
        options = definition.params.model_validate(spec.options).model_dump()
        if "temperature" in options:
            options["temperature"] = resolve_temperature(options["temperature"], calibrated)
        terms.append(KDTerm(spec.name, spec.weight, definition, options, warmup_epochs=spec.warmup_epochs))
    return terms


def transfer_subset(recipe: Recipe, data: PreparedData) -> ImageData:
    """The transfer images (the training split, or its reduced per-class subset)."""
    reduced = recipe.distill.transfer.reduced
    if reduced is None:
        return data.training.train
    try:
        return reduce_per_class(data.training.train, reduced.per_class, reduced.seed)
    except ValueError as exc:
        raise KdedgeError(f"distill.transfer.reduced.per_class: {exc} (after the validation split); "
                          "lower per_class") from None


def build_transfer_set(recipe: Recipe, data: PreparedData, train: ImageData, teacher: nn.Module,
                       device: torch.device) -> TransferSet:
    cfg = recipe.distill.transfer
    description = f"training split ({len(train)} images)"
    if cfg.reduced is not None:
        description = f"{cfg.reduced.per_class} images per class ({len(train)} images)"
    true_labels = _replace_train(data.training, train)
    if not cfg.unlabeled:
        return TransferSet(true_labels, true_labels, description)
    # Unlabeled: the loop still needs a label per image for its running accuracy, so it gets the
    # teacher's prediction (train accuracy then reads as agreement with the teacher).
    cache = teacher_outputs(teacher, train, data.training.stats, [],
                            batch_size=recipe.teacher.batch_size, device=device)
    pseudo = with_labels(train, cache.logits.argmax(1).cpu())
    return TransferSet(_replace_train(data.training, pseudo), true_labels,
                       f"{description}, unlabeled ({'teacher pseudo-labels' if cfg.pseudo_labels else 'soft targets only'})")


def _replace_train(training: TrainingData, train) -> TrainingData:
    return replace(training, train=train)  # keeps the training transform and stats


def distill_student(recipe: Recipe, run: RunDir, ctx: StageContext, *, data: PreparedData, transfer: TransferSet,
                    teacher: nn.Module, terms: list[KDTerm], student: RoleConfig, stage: str,
                    device: torch.device, resume: bool, temperature: float | None, seed: int | None = None,
                    fingerprint_extra: str = "") -> dict[str, Any]:
    """Train one KD student into <run>/<stage> (reused when finished)."""
    fingerprint = f"{recipe.hash}:{stage}:{fingerprint_extra}"
    record, resume_state = reuse_or_resume(run, stage, fingerprint, ctx, resume=resume)
    if record:
        return record
    job = kd_job(recipe, transfer=transfer, teacher=teacher, terms=terms, student=student, stage=stage,
                 device=device, temperature=temperature, fingerprint=fingerprint,
                 seed=recipe.seed if seed is None else seed)
    return train_role(job, run=run, data=data, ctx=ctx, device=device, resume_state=resume_state)


def kd_job(recipe: Recipe, *, transfer: TransferSet, teacher: nn.Module, terms: list[KDTerm], student: RoleConfig,
           stage: str, device: torch.device, temperature: float | None, fingerprint: str, seed: int) -> RoleJob:
    """The training job of a KD student (fp32 or QAT): the recipe's loss terms, with the teacher's outputs
    computed once when the student's inputs are not augmented."""
    cfg = student.train
    training = transfer.training
    teacher_paths = sorted({t.feature_paths[1] for t in terms if t.feature_paths})
    probe = prepare_batch(training.train.images[:2], *training.stats.tensors(torch.device("cpu")))
    cache = None
    use_cache = recipe.distill.cache_teacher and not cfg.augment
    check_mc_terms(terms, teacher)  # before the cache: a teacher without dropout is a recipe error
    if use_cache and feature_cache_fits(teacher, probe, teacher_paths, len(training.train)):
        cache = teacher_outputs(teacher, training.train, training.stats, teacher_paths,
                                batch_size=cfg.eval_batch_size, device=device, mc=mc_keys(terms))
    label_mode = "none" if recipe.distill.transfer.unlabeled and not recipe.distill.transfer.pseudo_labels else "labels"
    return RoleJob(
        stage=stage, role="student", config=student, training=training,
        make_step=lambda model: make_distill_step(model, teacher, terms, label_mode=label_mode, cache=cache, probe=probe),
        fingerprint=fingerprint, seed=seed,
        # a warm-up is recorded where the recipe has one (as the recipe's dict spells it)
        record_extra={"kd": {"losses": [{"name": t.name, "weight": t.weight, **t.options,
                                         **({"warmup_epochs": t.warmup_epochs} if t.warmup_epochs else {})}
                                        for t in terms],
                             "teacher_temperature": temperature, "transfer": transfer.description,
                             "teacher_cached": cache is not None, "label_mode": label_mode}})


def reuse_or_resume(run: RunDir, stage: str, fingerprint: str, ctx: StageContext, *,
                     resume: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(finished record, None) to reuse a stage, else (None, the checkpoint to resume from or None)."""
    record = finished_record(run, stage)
    if record:
        stale_fingerprint(run, stage, record, fingerprint)  # reuse only what this recipe would train
        verified_model_file(run, stage)  # and only the bytes that were written
        ctx.print(f"[green]{stage}[/]: reusing the finished model (test accuracy {record['test']['accuracy']:.4f})")
        return record, None
    return None, resume_state_for(run, stage, fingerprint, resume=resume)


def train_baseline(recipe: Recipe, run: RunDir, ctx: StageContext, *, data: PreparedData, transfer: TransferSet,
                   student: RoleConfig, stage: str, device: torch.device, resume: bool,
                   seed: int | None = None) -> dict[str, Any]:
    """The same student on the same images with hard (true) labels only: no teacher."""
    fingerprint = f"{recipe.hash}:{stage}"
    record, resume_state = reuse_or_resume(run, stage, fingerprint, ctx, resume=resume)
    if record:
        return record
    cfg = student.train
    job = RoleJob(stage=stage, role="student", config=student, training=transfer.true_labels,
                  make_step=lambda model: (supervised_step(model, label_smoothing=cfg.label_smoothing), None),
                  fingerprint=fingerprint, seed=recipe.seed if seed is None else seed,
                  record_extra={"kd": None, "transfer": transfer.description + " with true labels"})
    return train_role(job, run=run, data=data, ctx=ctx, device=device, resume_state=resume_state)
