"""Stage: export the models of a run for deployment, each artifact checked before it is kept.

    <run>/exports/<model>/model.onnx           fp32, dynamic batch (checked against torch: max |diff| <= 1e-4)
                         model.int8.onnx      ONNX Runtime INT8 (checked against the fp32 ONNX: parity gate)
                         model.int8-trt.onnx  TensorRT-form INT8, symmetric Q/DQ (parity gate)
                         model.engine         TensorRT engine, built on this GPU (parity gate)
                         model.mc.onnx        MC dropout in the graph (--mc-dropout N; .mc.int8.onnx,
                                              .mc.int8-trt.onnx: INT8, gated against it with the same masks)

What each format is, needs and records lives in its row of kdedge/export/formats.py; this stage only
runs the rows. An artifact is written to a temp file, checked, renamed into place, and only then
recorded in the manifest with its checksum, so a killed export leaves nothing that `kdedge bench` would accept.
Every ONNX file carries how to feed it in its metadata (kdedge/export/metadata.py). An INT8 artifact that
fails the gate gets the fp32 fallback (kdedge/export/fallback.py); one still refused is not written, the
other models and formats go on, and every refusal is listed at the end (ExportRefusals, exit 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdedge.data.int8_calibration import int8_calibration_images
from kdedge.errors import KdedgeError
from kdedge.export import metadata
from kdedge.export.fallback import Fallback, held_out_images, refusal_line, run_fallback
from kdedge.export.formats import FORMATS, ExportFormat, not_applicable_models
from kdedge.export.job import LOGITS, REFERENCE_LOGITS, ExportJob, ExportOptions
from kdedge.export.ort_session import open_session, session_logits
from kdedge.export.parity import Parity, gate_failures, parity
from kdedge.inference import predict_logits
from kdedge.inputs import normalise
from kdedge.io import atomic_path, restore_dir, sha256_file
from kdedge.layout import EXPORT_DIR, QAT_STUDENT, STUDENT, finished_models, requested_models, run_file
from kdedge.lock import run_lock
from kdedge.run import RunDir, package_versions
from kdedge.stage_model import load_stage_model
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData, check_same_data, prepare_data

FP32_TOLERANCE = 1e-4  # max |logit difference| between the fp32 ONNX and torch on real test images


class ExportRefusals(KdedgeError):
    """Raised after every model and format was tried: one line per export not written. `exports`: the
    manifest's exports, with everything that passed recorded."""

    def __init__(self, lines: list[str], exports: dict[str, Any]) -> None:
        super().__init__("")
        self.lines, self.exports = [" ".join(line.split()) for line in lines], exports
        # one line per refusal (KdedgeError would join them into one)
        self.args = (f"{len(lines)} export(s) not written (the others are recorded):\n"
                     + "\n".join(f"  {line}" for line in self.lines),)


class _Refused(KdedgeError):
    """One artifact refused by its gate (raised inside its atomic write, so nothing of it is kept)."""


@dataclass
class _ModelInputs:
    stage: str
    fp32: nn.Module             # the model (for a QAT student: its weights without fake quantization)
    quantized: nn.Module | None  # a QAT student's fake-quant model (its own INT8 scales)


def export_run(run_root: Path, ctx: StageContext, options: ExportOptions) -> dict[str, Any]:
    """Export every requested model of the run in every requested format; returns the manifest's exports."""
    with run_lock(run_root):  # one writer per run
        return _export_run(RunDir(run_root), ctx, options)


def _export_run(run: RunDir, ctx: StageContext, options: ExportOptions) -> dict[str, Any]:
    manifest = run.read_manifest()
    restore_dir(run.root / EXPORT_DIR)  # temp files a killed export left (we hold the lock: none is live)
    stages = _select_models(run, options.models)
    _preflight(options.formats)
    not_applicable = not_applicable_models(options.formats, stages, lambda s: _load(run, s).fp32, options.models)
    recipe = run.recipe()
    data = prepare_data(recipe, ctx.data_roots)
    check_same_data(manifest.get("data"), data, run.manifest_path)
    _check_input_shape(run, data)
    references = _References(data)
    calibration = _calibration_images(data, options.calib_images, seed=recipe.seed)
    held_out = held_out_images(data, seed=recipe.seed)
    refused: list[str] = []
    for stage in stages:
        failed: set[str] = set()  # formats of this model refused: those built on them are not tried
        inputs = _load(run, stage)
        for fmt in options.formats:
            if (fmt.name, stage) in not_applicable:
                ctx.print(f"[yellow]{stage}[/] {fmt.name}: skipped: {not_applicable[fmt.name, stage]}")
                continue
            if fmt.needs_modules and getattr(inputs.fp32, "foreign_kind", None):
                ctx.print(f"[yellow]{stage}[/] {fmt.name}: skipped: it quantizes the model's PyTorch layers, and "
                          f"this teacher is {inputs.fp32.foreign_kind} (its onnx-int8 export is made)")
                continue
            needs = {fmt.built_from} | ({"onnx"} if fmt.gated else set())
            if needs & failed:
                refused.append(f"{stage} {fmt.name}: not tried, it needs the {' and '.join(sorted(needs & failed))} "
                               "export, which was not written")
                failed.add(fmt.name)
                continue
            try:  # a refusal by a gate lets the others go on; any other error (a changed file, ...) stops here
                _export_one(run, ctx, inputs, fmt, options, data, references, calibration, held_out)
            except _Refused as exc:
                failed.add(fmt.name)
                refused.append(exc.message)
                ctx.print(f"[red]{stage}[/] {fmt.name}: refused, not written; going on with the others")
    exports = run.read_manifest().get("exports", {})
    if refused:
        raise ExportRefusals(refused, exports)
    return exports


def _preflight(formats: list[ExportFormat]) -> None:
    """Fail before any work when this machine cannot make a requested format."""
    for fmt in formats:
        reason = fmt.unmet()
        if reason is not None:
            raise KdedgeError(f"format {fmt.name}: {reason}")


def _select_models(run: RunDir, requested: list[str] | None) -> list[str]:
    finished = finished_models(run)
    if requested is None:
        if STUDENT not in finished:
            raise KdedgeError(f"{run.root}: no finished student to export; run `kdedge distill RECIPE` first "
                              f"(or pick models with --models, finished here: {', '.join(finished) or 'none'})")
        return finished
    return requested_models(run, requested)


def _check_input_shape(run: RunDir, data: PreparedData) -> None:
    recorded = run.read_manifest().get("data", {}).get("input_shape")
    if recorded and list(recorded) != list(data.input_shape):
        raise KdedgeError(f"{run.manifest_path}: the run was trained on inputs {recorded}, the data has "
                          f"{list(data.input_shape)}; point data.root at the run's dataset")


def _load(run: RunDir, stage: str) -> _ModelInputs:
    model, spec = load_stage_model(run, stage)
    if stage == QAT_STUDENT:
        from kdedge.quant.modelopt_backend import without_fake_quant

        # The QAT weights without their fake quantizers: the fp32 reference, and what ORT's PTQ starts from.
        return _ModelInputs(stage, without_fake_quant(model, spec), model)
    import kdedge.models

    # what is deployed: a re-parameterised copy (MobileOne's branches folded), the model itself otherwise
    deploy_form = getattr(kdedge.models, "deploy_form", lambda m: m)
    return _ModelInputs(stage, deploy_form(model).eval(), None)


class _References:
    """Logits on the test split, computed once per model and format and reused by the gates."""

    def __init__(self, data: PreparedData) -> None:
        self.data = data
        self.images = data.training.test.images.numpy()
        self.labels = data.training.test.labels.numpy()
        self.fp32_onnx: dict[str, np.ndarray] = {}
        self.last_fp32: np.ndarray | None = None

    def torch_logits(self, model: nn.Module) -> np.ndarray:
        return predict_logits(model, self.data.training.test, self.data.training.stats, batch_size=256,
                              device=torch.device("cpu")).numpy()

    def onnx_logits(self, path: Path) -> np.ndarray:
        return session_logits(open_session(path), self.images, self.data.training.stats)


def _calibration_images(data: PreparedData, count: int, *, seed: int) -> np.ndarray:
    """The INT8 calibration images (int8_calibration_images), normalised as the model sees them."""
    return normalise(int8_calibration_images(data.training.train, count, seed).numpy(), data.training.stats)


def _artifact_path(run: RunDir, stage: str, fmt: ExportFormat) -> Path:
    return run.root / EXPORT_DIR / stage / f"model{fmt.suffix}"


def _source(run: RunDir, stage: str, fmt: ExportFormat) -> Path | None:
    """The finished artifact the format is built from (recorded, unchanged), or None."""
    if fmt.built_from is None:
        return None
    source = FORMATS[fmt.built_from]
    record = run.read_manifest().get("exports", {}).get(stage, {}).get(fmt.built_from)
    path = _recorded_artifact(run, stage, source, record)
    if path is None:
        raise KdedgeError(f"{_artifact_path(run, stage, source)}: missing, unrecorded or changed; export the "
                          f"{fmt.built_from} format first (add --force if it is there already)")
    return path


def _recorded_artifact(run: RunDir, stage: str, fmt: ExportFormat, record: Any) -> Path | None:
    """The artifact's path when `record` names it and its checksum still matches, else None. Only a
    regular file at the format's own place inside the run is read (the manifest may be crafted)."""
    expected = _artifact_path(run, stage, fmt).relative_to(run.root).as_posix()
    if not isinstance(record, dict) or record.get("file") != expected:
        return None
    path = run_file(run.root, expected, what=f"exports.{stage}.{fmt.name}.file", must_exist=False)
    return path if path.is_file() and sha256_file(path) == record.get("sha256") else None


def _export_one(run: RunDir, ctx: StageContext, inputs: _ModelInputs, fmt: ExportFormat, options: ExportOptions,
                data: PreparedData, refs: _References, calibration: np.ndarray,
                held_out: tuple[np.ndarray, dict[str, Any]]) -> None:
    stage = inputs.stage
    path = _artifact_path(run, stage, fmt)
    # written (or removed) only at its place inside the run: a symlinked exports/ must not redirect it
    run_file(run.root, path.relative_to(run.root).as_posix(), what="the export path", must_exist=False)
    settings = options.settings(fmt, own_scales=inputs.quantized is not None)
    exports = run.read_manifest().get("exports", {})
    record = exports.get(stage, {}).get(fmt.name)
    if record and record.get("settings") == settings and _recorded_artifact(run, stage, fmt, record):
        ctx.print(f"[green]{stage}[/] {fmt.name}: up to date ({path.name})")
        if not fmt.gated:
            refs.fp32_onnx[stage] = refs.onnx_logits(path)
        return
    if record and not options.force:
        raise KdedgeError(f"{path}: an export made with other settings (or changed since it was recorded) is "
                          "there; pass --force to replace it")
    if not record and (path.exists() or path.is_symlink()):
        # unrecorded: an export killed between its rename and its record (we hold the run's lock, so no
        # other export is writing it); it was never trusted, so it is made again
        ctx.print(f"[yellow]{stage}[/] {fmt.name}: {path.name} was left unrecorded by an interrupted export; "
                  "exporting it again")
        path.unlink()
    if record:  # forget the old artifact before touching its file: no moment where a stale one is trusted
        run.update_manifest(exports={stage: {k: v for k, v in exports[stage].items() if k != fmt.name}})
    ctx.print(f"[cyan]{stage}[/] {fmt.name}: exporting …")
    t0 = time.perf_counter()
    fallback: Fallback | None = None
    with atomic_path(path) as tmp:
        job = ExportJob(fp32=inputs.fp32, quantized=inputs.quantized, out=tmp, source=_source(run, stage, fmt),
                        options=options, calibration=calibration, test_images=refs.images,
                        stats=data.training.stats, input_shape=data.input_shape, held_out=held_out[0])
        props = metadata.preprocessing_props(metadata.input_record(data), stage=stage, fmt=fmt.name)

        def check(artifact: Path, extra: dict[str, Any]) -> tuple[Parity, list[str]]:
            if fmt.suffix.endswith(".onnx"):  # before the gate and the checksum
                metadata.write_props(artifact, props)
            return _check(inputs, fmt, artifact, refs, options, extra)

        extra = fmt.produce(job)
        result, failures = check(tmp, extra)
        if failures and fmt.rank_layers is not None and options.max_fp32_layers > 0:
            ctx.print(f"[yellow]{stage}[/] {fmt.name}: {'; '.join(failures)}; looking for layers to keep in fp32 "
                      f"(at most {options.max_fp32_layers}, --max-fp32-layers)")
            fallback = run_fallback(fmt, job, (result, failures), budget=options.max_fp32_layers, check=check,
                                    held_out=held_out[1], progress=lambda line: ctx.print(f"  {line}"),
                                    console=ctx.console)
            result, failures, extra = fallback.after, fallback.failures, {**extra, **fallback.extra}
        if failures and not options.allow_drop:
            raise _Refused(refusal_line(stage, fmt.name, result, failures, fallback, options.max_fp32_layers))
    if not fmt.gated:
        refs.fp32_onnx[stage] = refs.last_fp32
    entry = {
        "file": str(path.relative_to(run.root)), "format": fmt.name, "runtime": fmt.runtime,
        "sha256": sha256_file(path), "bytes": path.stat().st_size, "settings": settings,
        "parity": result.to_dict(), "parity_failures": failures, "allowed_by_flag": bool(failures),
        "fp32_fallback": fallback.to_dict() if fallback is not None else None,
        "input": metadata.input_record(data), "export_time_s": time.perf_counter() - t0,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions(), **extra}
    run.update_manifest(exports={stage: {**run.read_manifest().get("exports", {}).get(stage, {}), fmt.name: entry}})
    note = f" [yellow](kept by --allow-drop: {'; '.join(failures)})[/]" if failures else ""
    if fallback is not None and fallback.layers:
        note += f" with {len(fallback.layers)} layer(s) in fp32 ({', '.join(s.name for s in fallback.layers)})"
    ctx.print(f"[green]{stage}[/] {fmt.name}: {path.stat().st_size / 1024:.0f} KiB, agreement "
              f"{result.agreement:.2%}, accuracy {result.accuracy:.4f} ({0.0 - result.accuracy_drop * 100:+.2f} pt){note}")


def _check(inputs: _ModelInputs, fmt: ExportFormat, tmp: Path, refs: _References, options: ExportOptions,
           extra: dict[str, Any]) -> tuple[Parity, list[str]]:
    """fp32 against torch (within FP32_TOLERANCE, else refused outright); INT8 against the fp32 ONNX,
    through the parity gate."""
    if not fmt.gated:
        reference = refs.torch_logits(inputs.fp32)
        candidate = refs.onnx_logits(tmp)
        refs.last_fp32 = candidate
        result = parity(reference, candidate, refs.labels)
        if result.max_abs_diff > FP32_TOLERANCE:
            raise _Refused(f"{inputs.stage} {fmt.name}: the exported model differs from torch by "
                              f"{result.max_abs_diff:.2e} > {FP32_TOLERANCE} on the test images; not kept "
                              "(please report this model to kdedge)")
        return result, []
    reference = extra.pop(REFERENCE_LOGITS) if REFERENCE_LOGITS in extra else refs.fp32_onnx[inputs.stage]
    candidate = extra.pop(LOGITS) if LOGITS in extra else refs.onnx_logits(tmp)
    result = parity(reference, candidate, refs.labels)
    return result, gate_failures(result, options.thresholds)
