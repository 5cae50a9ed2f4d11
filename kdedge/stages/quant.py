"""Stage: quantized distillation (QAT-KD), the KD student trained again under INT8 fake quantization.

    fp32 KD student (quant.init: student) or a fresh init (scratch)
      -> fake quant inserted, activation ranges calibrated on class-balanced training images
      -> the same loop and the same KD losses as the fp32 student -> <run>/student_qat/

Its accuracy, NLL and ECE are those of the fake-quant model, i.e. simulated INT8. The quant: section
is not part of the recipe hash (adding it keeps a finished teacher and student); it is part of this
stage's fingerprint instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdedge.data.int8_calibration import int8_calibration_images
from kdedge.data.training import TrainingData
from kdedge.errors import KdedgeError
from kdedge.layout import QAT_STUDENT as QAT_STAGE, STUDENT, finished_record, model_file
from kdedge.modelfile import load_model
from kdedge.quant.modelopt_backend import (
    quantize_for_qat,
    quantizer_count,
    save_qat_model,
)
from kdedge.recipe import Recipe, RoleConfig, without_unhashed
from kdedge.run import RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData
from kdedge.stages.roles import train_role
from kdedge.stages.students import TransferSet, kd_job, reuse_or_resume
from kdedge.train.batches import prepare_batch
from kdedge.train.distill_step import KDTerm


def train_qat_student(recipe: Recipe, run: RunDir, ctx: StageContext, *, data: PreparedData,
                      transfer: TransferSet, teacher: nn.Module, terms: list[KDTerm], device: torch.device,
                      resume: bool, temperature: float | None) -> dict[str, Any]:
    """Train the fake-quant student into <run>/student_qat (reused when finished with the same quant:)."""
    quant = recipe.quant
    fingerprint = qat_fingerprint(recipe)
    done = finished_record(run, QAT_STAGE)
    if done and done.get("fingerprint") != fingerprint:
        raise KdedgeError(f"{run.stage_dir(QAT_STAGE)}: was trained with another quant: section than the recipe's; "
                          "delete that directory to retrain it (teacher and student are kept) "
                          "or restore the quant: section it was made with")
    record, resume_state = reuse_or_resume(run, QAT_STAGE, fingerprint, ctx, resume=resume)
    if record:
        return record
    student = RoleConfig(model=recipe.student.model, train=quant.resolve_train(recipe.student.train))
    calib = calibration_batches(transfer.training, quant.calib_images, recipe.seed,
                                batch_size=student.train.eval_batch_size, device=device)
    init_from, init_sha256 = model_file(run, STUDENT) if quant.init == "student" else (None, None)

    def prepare(model: nn.Module) -> nn.Module:
        model = prepare_qat_model(model, init_from=init_from, calib_batches=calib, device=device,
                                  init_sha256=init_sha256)
        ctx.print(f"[cyan]{QAT_STAGE}[/]: INT8 fake quant ({quant.backend}), {quantizer_count(model)} quantizers "
                  f"calibrated on {sum(len(x) for x in calib)} training images; "
                  + ("fine-tuning the fp32 KD student" if init_from else "training from scratch"))
        return model

    job = kd_job(recipe, transfer=transfer, teacher=teacher, terms=terms, student=student, stage=QAT_STAGE,
                 device=device, temperature=temperature, fingerprint=fingerprint, seed=recipe.seed)
    job = replace(job, prepare_model=prepare, save=save_qat_model, record_extra={
        **job.record_extra, "fingerprint": fingerprint, "qat_train": student.train.model_dump(mode="json"),
        "quant": {"mode": quant.mode, "backend": quant.backend, "init": quant.init,
                  "calib_images": sum(len(x) for x in calib)}})
    return train_role(job, run=run, data=data, ctx=ctx, device=device, resume_state=resume_state)


def qat_fingerprint(recipe: Recipe) -> str:
    """The run's hash (teacher, student, data) plus the quant: section, which the hash leaves out."""
    quant = json.dumps(without_unhashed(recipe.quant.model_dump(mode="json")), sort_keys=True, separators=(",", ":"))
    return f"{recipe.hash}:{QAT_STAGE}:{hashlib.sha256(quant.encode()).hexdigest()[:16]}"


def prepare_qat_model(model: nn.Module, *, init_from: Path | None, calib_batches: list[torch.Tensor],
                      device: torch.device, init_sha256: str | None = None) -> nn.Module:
    """The model QAT starts from: `model` (freshly initialised) or, with `init_from`, the fp32 weights of
    that finished model file (checked against `init_sha256` where recorded); moved to `device`, fake
    quant inserted and calibrated."""
    if init_from is not None:
        fix = "rerun `kdedge distill RECIPE` so the fp32 student is trained again"
        fp32, _ = load_model(init_from, fix=fix, sha256=init_sha256)
        try:
            model.load_state_dict(fp32.state_dict())
        except RuntimeError:
            raise KdedgeError(f"{init_from}: the fp32 student is not the recipe's student architecture; {fix}") from None
    model.to(device)
    return quantize_for_qat(model, calib_batches)


def calibration_batches(training: TrainingData, count: int, seed: int, *, batch_size: int,
                        device: torch.device) -> list[torch.Tensor]:
    """The INT8 calibration images (int8_calibration_images), normalised, in batches on `device`."""
    images = int8_calibration_images(training.train, count, seed)
    mean, std = training.stats.tensors(device)
    return [prepare_batch(images[s:s + batch_size], mean, std) for s in range(0, len(images), batch_size)]
