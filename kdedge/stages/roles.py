"""Training one model of a run (teacher, student, baseline, ...): the part every stage shares.

A role lives in <run>/<stage>/ (model.pt, checkpoint.pt, metrics.json) with a record in the manifest's
`stages`. A finished role is reused; an unfinished one continues only with --resume; the weights, the
metrics and then the manifest are written in that order, so a crash never leaves a record without files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from kdedge.data.training import TrainingData
from kdedge.errors import KdedgeError
from kdedge.inference import predict_logits
from kdedge.io import sha256_file, write_json
from kdedge.layout import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, MODEL_SHA256
from kdedge.metrics import classification_report
from kdedge.modelfile import ModelSpecRecord, save_model
from kdedge.recipe import RoleConfig
from kdedge.run import RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData
from kdedge.train import StepFn, distributed, fit
from kdedge.train.loop import read_resume_state

# Builds the step for a freshly initialised model; may also return trainable helper modules
# (e.g. hint adapters) that are optimised and checkpointed with the model.
StepFactory = Callable[[nn.Module], tuple[StepFn, nn.Module | None]]
# Turns the freshly initialised model into the one to train (e.g. QAT: load the fp32 student, insert fake
# quant). It runs before the step is built and before a checkpoint is loaded, whose keys must match it.
ModelPrep = Callable[[nn.Module], nn.Module]
ModelSaver = Callable[[Path, nn.Module, ModelSpecRecord], None]


@dataclass(frozen=True)
class RoleJob:
    stage: str                 # directory under the run and key in manifest["stages"]
    role: str                  # the recipe section it comes from, used in messages (teacher, student, ...)
    config: RoleConfig
    training: TrainingData     # what it trains on (a transfer set for students)
    make_step: StepFactory
    fingerprint: str           # changes whenever anything that shapes the weights changes
    seed: int
    record_extra: dict[str, Any] = field(default_factory=dict)
    prepare_model: ModelPrep | None = None
    save: ModelSaver = save_model  # writes <stage>/model.pt (QAT models need their quantizer state too)


def resume_state_for(run: RunDir, job_stage: str, fingerprint: str, *, resume: bool,
                     exists: bool = True) -> dict[str, Any] | None:
    """The checkpoint to continue from. Read before anything is written, so a bad one fails cleanly."""
    ckpt = run.stage_dir(job_stage) / CHECKPOINT_FILE
    if exists and ckpt.exists() and not resume:
        # this command holds the run's lock, so that training is not live: its process stopped
        raise KdedgeError(f"{ckpt}: an interrupted {job_stage} training is there (its command has stopped); "
                          "pass --resume to continue it, or --force to start the run afresh")
    return read_resume_state(run.stage_dir(job_stage), fingerprint) if resume and exists else None


def train_role(job: RoleJob, *, run: RunDir, data: PreparedData, ctx: StageContext, device: torch.device,
               resume_state: dict[str, Any] | None) -> dict[str, Any]:
    out_dir = run.stage_dir(job.stage)
    # the pid lets a failing command mark only its own stage as stopped (kdedge.cli.app)
    run.update_manifest(stages={job.stage: {"status": "running", "device": str(device), "pid": os.getpid()}})
    spec = ModelSpecRecord(name=job.config.model.name, kwargs=job.config.model.kwargs,
                           in_channels=data.input_shape[0], num_classes=data.num_classes,
                           image_size=data.input_shape[1])
    torch.manual_seed(job.seed)  # weight init
    model = spec.build()
    if job.prepare_model is not None:
        model = job.prepare_model(model)
    cfg = job.config.train
    # in a multi-process run the step calls the model through DDP (the same model otherwise)
    step, helpers = job.make_step(distributed.wrap_for_training(model, device, channels_last=cfg.channels_last,
                                                                  sync_bn=cfg.sync_bn, field=f"{job.role}.train.sync_bn"))
    ctx.print(f"[cyan]{job.stage}[/]: {spec.name} ({parameter_count(model):,} parameters), "
              f"{len(job.training.train)} training images, {cfg.epochs} epochs on {device}")
    t0 = time.perf_counter()
    result = fit(model, step, data=job.training, cfg=cfg, seed=job.seed, device=device, out_dir=out_dir,
                 fingerprint=job.fingerprint, resume_state=resume_state, console=ctx.console, label=job.role,
                 stage=job.stage, extra_modules=helpers)
    summary = {"status": "complete", "model": spec.name, "parameters": parameter_count(model),
               "epochs": cfg.epochs, "train_images": len(job.training.train),
               "train_time_s": result.train_time_s, "wall_time_s": time.perf_counter() - t0,
               "resumed_from_epoch": result.resumed_from_epoch, "device": str(device),
               "precision": result.precision, "compiled": result.compiled,
               **({"data_parallel": result.data_parallel} if result.data_parallel else {}), **job.record_extra,
               **split_reports(model, data, cfg.eval_batch_size, device)}
    job.save(out_dir / MODEL_FILE, model, spec)
    # checked before every later load (a changed file is named); the fingerprint decides reuse
    summary.update({MODEL_SHA256: sha256_file(out_dir / MODEL_FILE), "fingerprint": job.fingerprint})
    write_json(out_dir / METRICS_FILE, {**summary, "history": result.history})
    run.update_manifest(stages={job.stage: summary}, timings={f"{job.stage}_train_s": result.train_time_s})
    return summary


def split_reports(model: nn.Module, data: PreparedData, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Accuracy, NLL, ECE and MCE on the full train, val and test splits, in eval mode."""
    out = {}
    for split, part in (("train", data.training.train), ("val", data.training.val), ("test", data.training.test)):
        logits = predict_logits(model, part, data.training.stats, batch_size=batch_size, device=device)
        out[split] = classification_report(logits, part.labels)
    return out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
