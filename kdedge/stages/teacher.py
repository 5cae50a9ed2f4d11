"""Stage: train the teacher into <run>/teacher/ (or reuse a finished one)."""

from __future__ import annotations

import time
from typing import Any

import torch

from kdedge.errors import KdedgeError
from kdedge.io import write_json
from kdedge.metrics import classification_report
from kdedge.modelfile import ModelSpecRecord, save_model
from kdedge.recipe import Recipe
from kdedge.run import PlannedRun, RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData, check_same_data, prepare_data
from kdedge.train import fit, supervised_step
from kdedge.train.evaluate import predict_logits
from kdedge.train.loop import CHECKPOINT_NAME, read_resume_state

STAGE = "teacher"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


def train_teacher(recipe: Recipe, planned: PlannedRun, ctx: StageContext, *,
                  resume: bool = False) -> dict[str, Any]:
    out_dir = planned.run.stage_dir(STAGE)
    record = planned.stage_record(STAGE)
    if record and record.get("status") == "complete" and (out_dir / MODEL_FILE).is_file():
        ctx.print(f"[green]teacher[/]: reusing the finished teacher in {out_dir} "
                  f"(test accuracy {record['test']['accuracy']:.4f}); pass --force to retrain")
        return record
    if planned.exists and (out_dir / CHECKPOINT_NAME).exists() and not resume:
        raise KdedgeError(f"{out_dir / CHECKPOINT_NAME}: an unfinished teacher training is there; "
                          "pass --resume to continue it or --force to start the run afresh")

    fingerprint = f"{recipe.hash}:{STAGE}"
    resume_state = read_resume_state(out_dir, fingerprint) if resume and planned.exists else None
    device = ctx.device(recipe.device)
    data = prepare_data(recipe, ctx.data_roots)
    if planned.exists:
        check_same_data(planned.run.read_manifest().get("data"), data, planned.run.manifest_path)
    run = planned.create()  # only now: a data error leaves nothing behind
    run.update_manifest(data=data.describe(), stages={STAGE: {"status": "running", "device": str(device)}})
    spec = ModelSpecRecord(name=recipe.teacher.model.name, kwargs=recipe.teacher.model.kwargs,
                           in_channels=data.input_shape[0], num_classes=data.num_classes,
                           image_size=data.input_shape[1])
    torch.manual_seed(recipe.seed)  # weight init
    model = spec.build()
    ctx.print(f"[cyan]teacher[/]: {spec.name} ({_param_count(model):,} parameters) on {data.dataset.name} "
              f"[{len(data.training.train)} train / {len(data.training.val)} val / {len(data.training.test)} test], "
              f"{recipe.teacher.train.epochs} epochs on {device}")

    cfg = recipe.teacher.train
    t0 = time.perf_counter()
    result = fit(model, supervised_step(model, label_smoothing=cfg.label_smoothing), data=data.training,
                 cfg=cfg, seed=recipe.seed, device=device, out_dir=out_dir,
                 fingerprint=fingerprint, resume_state=resume_state, console=ctx.console, label=STAGE)
    wall = time.perf_counter() - t0

    summary = {"status": "complete", "model": spec.name, "parameters": _param_count(model),
               "epochs": cfg.epochs, "train_time_s": result.train_time_s, "wall_time_s": wall,
               "resumed_from_epoch": result.resumed_from_epoch, "device": str(device),
               **final_reports(model, data, cfg.eval_batch_size, device)}
    save_model(out_dir / MODEL_FILE, model, spec)
    write_json(out_dir / METRICS_FILE, {**summary, "history": result.history})
    run.update_manifest(stages={STAGE: summary}, timings={"teacher_train_s": result.train_time_s})
    return summary


def final_reports(model, data: PreparedData, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Accuracy, NLL, ECE and MCE on each split, in eval mode."""
    out = {}
    for split, part in (("train", data.training.train), ("val", data.training.val), ("test", data.training.test)):
        logits = predict_logits(model, part, data.training.stats, batch_size=batch_size, device=device)
        out[split] = classification_report(logits, part.labels)
    return out


def _param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
