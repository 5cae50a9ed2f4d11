"""Stage: bring the user's own teacher into <run>/teacher/ (a state_dict, a torch.export program or an
ONNX file), checked against its input contract and the data before any work, and evaluated on load
(accuracy, NLL, ECE on every split) so a wrongly read teacher shows at once."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from kdedge.errors import KdedgeError
from kdedge.io import sha256_file, write_bytes, write_json
from kdedge.layout import (EXPORTED_MODEL_FILE, METRICS_FILE, MODEL_FILE, MODEL_SHA256, ONNX_MODEL_FILE,
                           TEACHER as STAGE)
from kdedge.modelfile import ModelSpecRecord, save_model
from kdedge.recipe import Recipe
from kdedge.run import PlannedRun
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData
from kdedge.stages.roles import parameter_count, split_reports
from kdedge.teachers.contract import check_contract, check_teacher_shape
from kdedge.teachers.load import load_foreign

# the file the run keeps, per source: a checkpoint becomes an ordinary kdedge model file
KEPT_AS = {"checkpoint": MODEL_FILE, "exported": EXPORTED_MODEL_FILE, "onnx": ONNX_MODEL_FILE}


def source_bytes(recipe: Recipe) -> tuple[Path, bytes]:
    path = recipe.teacher.source_path
    if recipe.teacher.source == "onnx" and path.is_file():
        from kdedge.teachers.onnx_model import self_contained_onnx

        return path, self_contained_onnx(path)
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise KdedgeError(f"{path}: teacher.{recipe.teacher.source} cannot be read ({exc.strerror}); give the "
                          "path of your teacher's file (relative to the recipe file)") from None


def source_fingerprint(recipe: Recipe) -> str:
    """The teacher file's content is part of what the students depend on: other weights, other run."""
    return hashlib.sha256(source_bytes(recipe)[1]).hexdigest()[:16]


def changed_teacher_file(recipe: Recipe, record: dict[str, Any], run_root: Path) -> None:
    """The run's teacher was read from this recipe's file, whose bytes have changed since: say that."""
    recorded = (record.get("source") or {}).get("sha256")
    if recorded is None:
        return
    path, content = source_bytes(recipe)
    now = hashlib.sha256(content).hexdigest()
    if now != recorded:
        raise KdedgeError(f"{path}: teacher.{recipe.teacher.source} changed since {run_root} read it (SHA-256 "
                          f"{now[:12]}…, the run's teacher {recorded[:12]}…); pass --force to read the new one "
                          "into a fresh run, or point the recipe at the file the run was made with")


def import_foreign_teacher(recipe: Recipe, planned: PlannedRun, ctx: StageContext, data: PreparedData,
                           fingerprint: str, *, source: str) -> dict[str, Any]:
    """`source` names the recipe file in messages."""
    kind = recipe.teacher.source
    path, content = source_bytes(recipe)
    channels, height, width = data.input_shape
    stats = data.training.stats
    check_contract(recipe.teacher.input, channels=channels, image_size=(height, width), classes=data.dataset.classes,
                   mean=stats.mean, std=stats.std, source=source)
    if (recipe.teacher.input is None or recipe.teacher.input.mean is None) and "mean" not in recipe.data.options:
        ctx.print(f"[yellow]teacher[/]: your teacher is fed pixels normalised with the data's own statistics "
                  f"(mean {[round(v, 4) for v in stats.mean]}, std {[round(v, 4) for v in stats.std]}); if it was "
                  "trained with other values, give them as data.mean/std and teacher.input.mean/std")
    device = ctx.device(recipe.device)
    spec = ModelSpecRecord(name=recipe.teacher.model.name if kind == "checkpoint" else f"{kind} teacher",
                           kwargs=recipe.teacher.model.kwargs if kind == "checkpoint" else {},
                           in_channels=channels, num_classes=data.num_classes, image_size=height)
    model = load_foreign(kind, path, content, spec=spec, device=device)
    if kind != "checkpoint":
        check_teacher_shape(model.input_shape, channels=channels, image_size=(height, width), path=str(path),
                            field=kind)
    model.to(device).eval()
    _check_outputs(model, data, device, path, kind)
    ctx.print(f"[cyan]teacher[/]: evaluating your {kind} teacher {escape(str(path))} on the train, val and "
              "test splits")
    reports = split_reports(model, data, recipe.teacher.batch_size, device)
    run = planned.create()  # only now: a bad teacher file leaves nothing behind
    run.update_manifest(data=data.describe())
    out = run.stage_dir(STAGE) / KEPT_AS[kind]
    if kind == "checkpoint":
        save_model(out, model, spec)
    else:
        write_bytes(out, content)
    record = {"status": "complete", "model": spec.name, "parameters": model.weight_count() if kind == "onnx" else parameter_count(model),
              "source": {"kind": kind, "path": str(path), "sha256": hashlib.sha256(content).hexdigest()},
              "model_file": out.name, "spec": asdict(spec), "device": str(device), **reports,
              MODEL_SHA256: sha256_file(out), "fingerprint": fingerprint}
    if recipe.teacher.input is not None:
        record["input"] = recipe.teacher.input.model_dump(exclude_none=True)
    write_json(run.stage_dir(STAGE) / METRICS_FILE, record)
    run.update_manifest(stages={STAGE: record})
    test = record["test"]
    ctx.print(f"[green]teacher[/]: your {kind} teacher, read correctly? test accuracy {test['accuracy']:.4f}, "
              f"NLL {test['nll']:.4f}, ECE {test['ece']:.4f} on {len(data.training.test)} test images "
              f"(val accuracy {record['val']['accuracy']:.4f})")
    return record


def _check_outputs(model: torch.nn.Module, data: PreparedData, device: torch.device, path: Path, kind: str) -> None:
    """Two real images through the teacher: one logit per class of the data, or a one-line error."""
    from kdedge.inputs import normalise_batch

    probe = normalise_batch(data.training.test.images[:2], *data.training.stats.tensors(device))
    try:
        with torch.no_grad():
            logits = model(probe)
    except KdedgeError:
        raise
    except Exception as exc:  # a foreign graph can fail in many ways on input it was not made for
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise KdedgeError(f"{path}: teacher.{kind} fails on the data's images {list(probe.shape)} ({reason}); "
                          "check teacher.input and the data's image_size/color") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != data.num_classes:
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise KdedgeError(f"{path}: teacher.{kind} returns {shape} for 2 images, not [2, {data.num_classes}] "
                          f"(one logit per class of the data: {_listed(data.dataset.classes)}); point "
                          "data.root at the dataset the teacher was trained on, or return the logits first")


def _listed(names: tuple[str, ...], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")
