"""THE training loop, used by every stage (teacher, student, baseline).

Determinism: each epoch draws its shuffle order, augmentation and dropout masks from seeds derived
from (seed, epoch), and the learning rate is a pure function of the step. A checkpoint after each
epoch therefore holds everything needed to continue: resuming after epoch k gives bitwise the same
weights as an uninterrupted run (same device, same thread count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from kdedge.data import ImageData
from kdedge.data.training import TrainingData
from kdedge.errors import KdedgeError
from kdedge.inference import predict_logits, uses_conv
from kdedge.layout import CHECKPOINT_FILE
from kdedge.metrics import accuracy, nll
from kdedge.recipe import TrainConfig
from kdedge.train.batches import AugmentSpec, prepare_batch
from kdedge.train import distributed
from kdedge.train.checkpoint import load_checkpoint, save_checkpoint
from kdedge.train.precision import (autocast, backward_step, compile_model, make_scaler, precision_note,
                                    resolve_precision, set_determinism)
from kdedge.train.schedule import learning_rate
from kdedge.train.steps import StepFn

_PROGRESS_EVERY = 10  # batches between progress refreshes (each one syncs the device)


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    precision: str = "fp32"  # what it trained in (train.precision resolved for the device)
    compiled: bool = False   # trained through torch.compile
    data_parallel: dict[str, Any] | None = None  # world size and every rank's weight digest (multi-process)

    @property
    def train_time_s(self) -> float:
        return sum(h["epoch_time_s"] for h in self.history)


def read_resume_state(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None when there is none yet."""
    path = out_dir / CHECKPOINT_FILE
    return load_checkpoint(path, fingerprint=fingerprint) if path.exists() else None


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch, purpose)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


def batch_bounds(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each batch; a trailing batch too small to give each of `world` processes two
    samples joins the previous batch, because BatchNorm cannot train on a single sample whose feature
    map is 1x1 (one process: only a trailing batch of one sample moves)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2 * world:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    # No weight decay on biases and norm parameters: the usual practice, and it helps small nets.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov and opt.momentum > 0)
    return torch.optim.AdamW(groups, lr=opt.lr)


def fit(model: nn.Module, step: StepFn, *, data: TrainingData, cfg: TrainConfig, seed: int,
        device: torch.device, out_dir: Path, fingerprint: str, resume_state: dict[str, Any] | None = None,
        console: Console | None = None, label: str = "teacher",
        extra_modules: nn.Module | None = None, stage: str | None = None) -> FitResult:
    """Train `model` with `step` for cfg.epochs, checkpointing each epoch into out_dir.

    `fingerprint` ties checkpoints to one configuration, so a resume never mixes two.
    `resume_state` is a checkpoint already read by `read_resume_state` (read before the caller writes
    anything, so a corrupt checkpoint fails cleanly). `label` is the recipe role (teacher, student, ...)
    and names the fields in messages; `stage` (baseline, student_qat, ...; default: label) names the
    model in progress lines. `extra_modules` (e.g. feature adapters) are trained with the model and
    saved in its checkpoints, but are not part of the final model.
    """
    shown = stage or label
    channels_last = cfg.channels_last and uses_conv(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    precision = resolve_precision(cfg.precision, device, field=f"{label}.train.precision")
    set_determinism(device, cfg.deterministic)
    scaler = make_scaler(precision, device)  # fp16 only
    if cfg.compile:
        compile_model(model, device, field=f"{label}.train.compile")
    if console and precision_note(precision, device):
        console.print(f"[yellow]warning[/]: {label}.train.precision: {precision_note(precision, device)}")
    if extra_modules is not None:
        extra_modules.to(device)
        optimizer.add_param_group({"params": list(extra_modules.parameters()),
                                   "weight_decay": cfg.optimizer.weight_decay})

    if distributed.world() > 1 and cfg.batch_size < 2 * distributed.world():
        raise KdedgeError(f"{label}.train.batch_size: {cfg.batch_size} is the global batch and cannot give each of "
                          f"{distributed.world()} processes two images; raise it to at least {2 * distributed.world()}")
    result = FitResult(precision=precision, compiled=cfg.compile)
    start_epoch = 0
    ckpt_path = out_dir / CHECKPOINT_FILE
    if resume_state is not None:
        state = resume_state
        model.load_state_dict(state["model"])
        if extra_modules is not None:
            extra_modules.load_state_dict(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])  # the loss scale it had reached, so steps match
        result.history = list(state["history"])
        start_epoch = result.resumed_from_epoch = int(state["epoch"])
        if console:
            console.print(f"[cyan]{shown}[/]: resuming after epoch {start_epoch}/{cfg.epochs}")
            was = (state.get("device"), state.get("threads"))
            if state.get("precision", "fp32") != precision:
                console.print(f"[yellow]warning[/]: the checkpoint was trained in {state.get('precision', 'fp32')}, "
                              f"this run trains in {precision}: the result will not be bitwise identical")
            if state.get("world_size", 1) != distributed.world():
                console.print(f"[yellow]warning[/]: the checkpoint was trained by {state.get('world_size', 1)} "
                              f"process(es), this run uses {distributed.world()}: the result will not be bitwise "
                              "identical to an uninterrupted run")
            if was != (str(device), torch.get_num_threads()):
                console.print(f"[yellow]warning[/]: the checkpoint was written on {was[0]} with {was[1]} threads, "
                              f"this run uses {device} with {torch.get_num_threads()}: the result will not be "
                              "bitwise identical to an uninterrupted run")

    bounds = batch_bounds(len(data.train), cfg.batch_size, distributed.world())
    steps_per_epoch = len(bounds)
    mean, std = data.stats.tensors(device)
    augmentation = (AugmentSpec(cfg.crop_padding, data.hflip_ok, data.train_transform, data.min_crop_scale)
                    if cfg.augment else None)

    progress = _progress(console)
    checkpointed = start_epoch
    try:
        with progress:
            task = progress.add_task(shown, total=steps_per_epoch, epoch="", stats="")
            for epoch in range(start_epoch, cfg.epochs):
                progress.reset(task, total=steps_per_epoch, epoch=f"{epoch + 1}/{cfg.epochs}", stats="")
                if hasattr(step, "start_epoch"):  # per-loss weight warm-ups (distill_step), epochs from 1
                    step.start_epoch(epoch + 1)
                record = _train_epoch(
                    model, step, optimizer, data.train, mean, std, cfg=cfg, epoch=epoch, seed=seed,
                    bounds=bounds, augmentation=augmentation, channels_last=channels_last,
                    progress=progress, task=task, label=label, precision=precision, scaler=scaler,
                    extra_modules=extra_modules)
                distributed.broadcast_buffers(model, extra_modules)  # rank 0's BatchNorm statistics everywhere
                if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                    record.update(_evaluate(model, data, cfg, device))
                result.history.append(record)
                save_checkpoint(ckpt_path, {
                    "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "history": result.history, "fingerprint": fingerprint,
                    "extra": extra_modules.state_dict() if extra_modules is not None else {},
                    "device": str(device), "threads": torch.get_num_threads(), "precision": precision,
                    "world_size": distributed.world(),
                    "scaler": scaler.state_dict() if scaler is not None else {}})
                checkpointed = epoch + 1
                if console:
                    console.print(_epoch_line(shown, record, cfg.epochs))
    except KeyboardInterrupt as exc:
        # what the interrupt kept, for the CLI's message (kdedge.cli.app.interrupted_message): promise a
        # checkpoint only when an epoch of this model was written
        # (the signal may land between a checkpoint's rename and `checkpointed` being updated: ask the file)
        exc.stage, exc.epochs_done, exc.epochs = shown, max(checkpointed, _saved_epoch(ckpt_path)), cfg.epochs
        raise
    digests = distributed.rank_digests(model)  # raises if the ranks diverged
    result.data_parallel = digests.record() if digests else None
    model.eval()
    return result


def _saved_epoch(path: Path) -> int:
    """The epoch count of the checkpoint at `path`, 0 when there is none or it cannot be read."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # any unreadable checkpoint counts as none: the message must not fail
        return 0


def _train_epoch(model, step, optimizer, train: ImageData, mean, std, *, cfg: TrainConfig, epoch: int,
                 seed: int, bounds: list[tuple[int, int]], augmentation, channels_last: bool, progress, task,
                 label: str, precision: str = "fp32", scaler=None, extra_modules=None) -> dict:
    model.train()  # (extra modules stay in whatever mode they are; adapters have no dropout/BN)
    # every rank draws the same global order and trains on its slice of each global batch; augmentation
    # and dropout differ per rank (rank 0 of a multi-process run draws exactly what one process draws)
    world, rank = distributed.world(), distributed.rank()
    order_gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, 0))
    aug_gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, 1) + rank)
    torch.manual_seed(epoch_seed(seed, epoch, 2) + rank)  # dropout masks (global RNG, all devices)
    average_extra = (lambda: distributed.average_gradients(extra_modules)) if world > 1 and extra_modules else None
    perm = torch.randperm(len(train), generator=order_gen)
    device = mean.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    t0 = time.perf_counter()
    lr = 0.0
    steps_per_epoch = len(bounds)
    for i, (start, end) in enumerate(bounds):
        idx = perm[start:end]
        share = 1.0
        if world > 1:  # DDP averages over ranks: weigh each slice by its size so the step is the global mean
            lo, hi = distributed.local_slice(len(idx))
            share = (hi - lo) * world / len(idx)
            idx = idx[lo:hi]
        batch = train.images[idx]
        if device.type == "cuda":  # page-locked, so the copy to the device overlaps the step
            batch = batch.pin_memory()
        x = prepare_batch(batch, mean, std, augmentation=augmentation, generator=aug_gen,
                          channels_last=channels_last)
        y = train.labels[idx].to(device, non_blocking=True)
        lr = learning_rate(epoch * steps_per_epoch + i, steps_per_epoch, cfg.epochs, cfg.optimizer, cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(precision, device):  # the forward and its loss; backward runs outside autocast
            loss, logits = step(x, y, idx)
        optimizer.zero_grad(set_to_none=True)
        backward_step(loss if share == 1.0 else loss * share, optimizer, scaler, after_backward=average_extra)
        with torch.no_grad():
            loss_sum += loss.detach().double() * len(idx)
            correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
        if (i + 1) % _PROGRESS_EVERY == 0 or i + 1 == steps_per_epoch:
            if not torch.isfinite(distributed.all_reduce_sum(loss_sum)):  # every rank stops together
                raise KdedgeError(
                    f"{label}: training diverged (loss is not finite) in epoch {epoch + 1}, step {i + 1}; "
                    f"lower {label}.train.optimizer.lr (now {cfg.optimizer.lr}) or add schedule.warmup_epochs")
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, completed=i + 1,
                            stats=f"loss {loss_sum.item() / seen:.4f}  acc {correct.item() / seen:.4f}  {rate:,.0f} img/s")
    elapsed = time.perf_counter() - t0
    if world > 1:  # the epoch's figures over the whole global batch, the same on every rank
        loss_sum, correct = distributed.all_reduce_sum(loss_sum), distributed.all_reduce_sum(correct)
        seen = int(distributed.all_reduce_sum(torch.tensor(seen, device=loss_sum.device)).item())
    return {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum.item() / seen,
            "train_accuracy": correct.item() / seen, "epoch_time_s": elapsed,
            "train_images_per_s": seen / elapsed}


def _evaluate(model, data: TrainingData, cfg: TrainConfig, device) -> dict:
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    for split, part in (("val", data.val), ("test", data.test)):
        logits = predict_logits(model, part, data.stats, batch_size=cfg.eval_batch_size, device=device)
        out[f"{split}_accuracy"] = accuracy(logits, part.labels)
        out[f"{split}_nll"] = nll(logits, part.labels)
    out["eval_time_s"] = time.perf_counter() - t0
    return out


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold cyan]{task.description}[/] epoch {task.fields[epoch]}"),
        BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
        console=console, transient=True, disable=console is None)


def _epoch_line(label: str, r: dict, epochs: int) -> str:
    evaluated = (f"val {r['val_accuracy']:.4f}  test {r['test_accuracy']:.4f}  " if "val_accuracy" in r else "")
    return (f"[cyan]{label}[/] epoch {r['epoch']:>3}/{epochs}  loss {r['train_loss']:.4f}  "
            f"train {r['train_accuracy']:.4f}  {evaluated}{r['train_images_per_s']:,.0f} img/s  {r['epoch_time_s']:.1f}s")
