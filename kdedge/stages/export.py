"""Stage: export the models of a run for deployment, each artifact checked before it is kept.

    <run>/exports/<model>/model.onnx           fp32, dynamic batch (checked against torch: max |diff| <= 1e-4)
                         model.int8.onnx      ONNX Runtime INT8 (checked against the fp32 ONNX: parity gate)
                         model.int8-trt.onnx  TensorRT-form INT8, symmetric Q/DQ (parity gate)
                         model.engine         TensorRT engine, built on this GPU (parity gate)

An artifact is written to a temp file, checked, renamed into place, and only then recorded in the
manifest with its checksum, so a killed export leaves nothing that `kdedge bench` would accept.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from kdedge.data.calibration import calibration_indices
from kdedge.errors import KdedgeError
from kdedge.export.formats import ExportFormat
from kdedge.export.onnx_fp32 import INPUT_NAME, OPSET, export_onnx
from kdedge.export.ort_int8 import CalibMethod, has_conv, quantize_dynamic_int8, quantize_static_qdq
from kdedge.export.ort_session import normalise, open_session, session_logits
from kdedge.export.parity import Parity, ParityThresholds, gate_failures, parity
from kdedge.export.qdq_graph import summarise_qdq
from kdedge.io import atomic_path, sha256_file
from kdedge.recipe import ExportConfig
from kdedge.run import RunDir, package_versions
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData, check_same_data, prepare_data
from kdedge.layout import EXPORT_DIR, QAT_STUDENT as QAT_STAGE, finished_models, requested_models
from kdedge.stage_model import load_stage_model
from kdedge.train.evaluate import predict_logits

FP32_TOLERANCE = 1e-4  # max |logit difference| between the fp32 ONNX and torch on real test images


@dataclass(frozen=True)
class ExportOptions:
    formats: list[ExportFormat]
    models: list[str] | None = None                 # None: every finished model of the run
    calib_images: int = 512
    calib_method: CalibMethod = "minmax"
    quantization: Literal["auto", "static", "dynamic"] = "auto"
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    allow_drop: bool = False
    force: bool = False
    engine_max_batch: int = 64

    def settings(self, fmt: ExportFormat, stage: str) -> dict[str, Any]:
        """What shapes the artifact: a recorded export with other settings is not reused."""
        if not fmt.int8:
            return {"opset": OPSET}
        out: dict[str, Any] = {"parity_thresholds": asdict(self.thresholds)}
        if fmt.name == "onnx-int8":
            out.update(calib_images=self.calib_images, calib_method=self.calib_method,
                       quantization=self.quantization)
        elif stage != QAT_STAGE:  # a QAT student carries its own scales
            out.update(calib_images=self.calib_images, calib_method="max (modelopt)")
        if fmt.name == "engine":
            out.update(max_batch=self.engine_max_batch)
        return out


@dataclass
class _ModelInputs:
    stage: str
    fp32: nn.Module             # the model (for a QAT student: its weights without fake quantization)
    quantized: nn.Module | None  # a QAT student's fake-quant model (its own INT8 scales)


def export_run(run_root: Path, ctx: StageContext, options: ExportOptions) -> dict[str, Any]:
    """Export every requested model of the run in every requested format; returns the manifest's exports."""
    run = RunDir(run_root)
    manifest = run.read_manifest()
    stages = _select_models(run, options.models)
    _preflight(options.formats)
    recipe = run.recipe()
    data = prepare_data(recipe, ctx.data_roots)
    check_same_data(manifest.get("data"), data, run.manifest_path)
    _check_input_shape(run, stages, data)
    references = _References(data)
    calibration = _calibration_images(data, options.calib_images, seed=recipe.seed)
    for stage in stages:
        inputs = _load(run, stage)
        for fmt in options.formats:
            _export_one(run, ctx, inputs, fmt, options, data, references, calibration)
    return run.read_manifest().get("exports", {})


def _preflight(formats: list[ExportFormat]) -> None:
    """Fail before any work when a requested format's runtime is missing."""
    from importlib.util import find_spec

    names = {f.name for f in formats}
    if "onnx-int8-trt" in names and find_spec("modelopt") is None:
        raise KdedgeError("format onnx-int8-trt needs nvidia-modelopt; pip install 'kdedge[modelopt]'")
    if "engine" in names:
        from kdedge.export.tensorrt_engine import import_tensorrt

        import_tensorrt()
        if not torch.cuda.is_available():
            raise KdedgeError("format engine: TensorRT engines are built on the GPU that runs them and no CUDA GPU "
                              "is visible here; run the export on the target device")


def export_settings(run_root: Path, **given: Any) -> ExportConfig:
    """The recipe's export: section (defaults where it has none) with the command-line values that
    were given (not None) on top."""
    raw = RunDir(run_root).read_manifest()["recipe"].get("export") or {}
    merged = {**raw, **{k: v for k, v in given.items() if v is not None}}
    try:
        return ExportConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise KdedgeError(f"export setting {field}: {first['msg']}") from None


def export_table(run_root: Path, exports: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"exports of {run_root} (parity on the test split)")
    table.add_column("model")
    table.add_column("format")
    for column in ("KiB", "agree", "acc", "Δ pt"):
        table.add_column(column, justify="right")
    table.add_column("gate")
    for stage, formats in exports.items():
        for name, entry in formats.items():
            p = entry["parity"]
            gate = "fp32" if name == "onnx" else ("passed" if not entry["parity_failures"] else "[yellow]allowed[/]")
            table.add_row(stage, name, f"{entry['bytes'] / 1024:.0f}", f"{p['agreement']:.2%}",
                          f"{p['accuracy']:.4f}", f"{0.0 - p['accuracy_drop'] * 100:+.2f}", gate)
    return table


def _select_models(run: RunDir, requested: list[str] | None) -> list[str]:
    finished = finished_models(run)
    if requested is None:
        if "student" not in finished:
            raise KdedgeError(f"{run.root}: no finished student to export; run `kdedge distill RECIPE` first "
                              f"(or pick models with --models, finished here: {', '.join(finished) or 'none'})")
        return finished
    return requested_models(run, requested)


def _check_input_shape(run: RunDir, stages: list[str], data: PreparedData) -> None:
    recorded = run.read_manifest().get("data", {}).get("input_shape")
    if recorded and list(recorded) != list(data.input_shape):
        raise KdedgeError(f"{run.manifest_path}: the run was trained on inputs {recorded}, the data has "
                          f"{list(data.input_shape)}; point data.root at the run's dataset")


def _load(run: RunDir, stage: str) -> _ModelInputs:
    model, spec = load_stage_model(run, stage)
    if stage == QAT_STAGE:
        from kdedge.quant.modelopt_backend import without_fake_quant

        # The QAT weights without their fake quantizers: the fp32 reference, and what ORT's PTQ starts from.
        return _ModelInputs(stage, without_fake_quant(model, spec), model)
    return _ModelInputs(stage, model, None)


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
    """`count` real training images, stratified by class, normalised as the model sees them."""
    train = data.training.train
    idx = calibration_indices(train.labels, count, seed)
    return normalise(train.images[idx].numpy(), data.training.stats)


def _artifact_path(run: RunDir, stage: str, fmt: ExportFormat) -> Path:
    return run.root / EXPORT_DIR / stage / f"model{fmt.suffix}"


def _export_one(run: RunDir, ctx: StageContext, inputs: _ModelInputs, fmt: ExportFormat, options: ExportOptions,
                data: PreparedData, refs: _References, calibration: np.ndarray) -> None:
    stage = inputs.stage
    path = _artifact_path(run, stage, fmt)
    settings = options.settings(fmt, stage)
    exports = run.read_manifest().get("exports", {})
    record = exports.get(stage, {}).get(fmt.name)
    if record and record.get("settings") == settings and path.is_file() and sha256_file(path) == record["sha256"]:
        ctx.print(f"[green]{stage}[/] {fmt.name}: up to date ({path.name})")
        if fmt.name == "onnx":
            refs.fp32_onnx[stage] = refs.onnx_logits(path)
        return
    if (record or path.exists()) and not options.force:
        raise KdedgeError(f"{path}: an export made with other settings (or unrecorded) is there; "
                          "pass --force to replace it")
    if record:  # forget the old artifact before touching its file: no moment where a stale one is trusted
        run.update_manifest(exports={stage: {k: v for k, v in exports[stage].items() if k != fmt.name}})
    ctx.print(f"[cyan]{stage}[/] {fmt.name}: exporting …")
    t0 = time.perf_counter()
    with atomic_path(path) as tmp:
        extra = _PRODUCERS[fmt.name](inputs, tmp, options, data, refs, calibration)
        result, failures = _check(inputs, fmt, tmp, refs, options, extra)
        if failures and not options.allow_drop:
            raise KdedgeError(f"{stage} {fmt.name}: refused by the parity gate on {result.images} test images: "
                              f"{'; '.join(failures)}; nothing written. Calibrate on more images "
                              "(--calib-images), try --calib-method percentile|entropy, or pass --allow-drop")
    if fmt.name == "onnx":
        refs.fp32_onnx[stage] = refs.last_fp32
    entry = {
        "file": str(path.relative_to(run.root)), "format": fmt.name, "runtime": fmt.runtime,
        "sha256": sha256_file(path), "bytes": path.stat().st_size, "settings": settings,
        "parity": result.to_dict(), "parity_failures": failures, "allowed_by_flag": bool(failures),
        "input": _input_record(data), "export_time_s": time.perf_counter() - t0,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions(), **extra}
    run.update_manifest(exports={stage: {**run.read_manifest().get("exports", {}).get(stage, {}), fmt.name: entry}})
    note = f" [yellow](kept by --allow-drop: {'; '.join(failures)})[/]" if failures else ""
    ctx.print(f"[green]{stage}[/] {fmt.name}: {path.stat().st_size / 1024:.0f} KiB, agreement "
              f"{result.agreement:.2%}, accuracy {result.accuracy:.4f} ({0.0 - result.accuracy_drop * 100:+.2f} pt){note}")


def _input_record(data: PreparedData) -> dict[str, Any]:
    c, h, w = data.input_shape
    return {"name": INPUT_NAME, "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW",
            "normalisation": {"scale": 1 / 255, "mean": list(data.training.stats.mean),
                              "std": list(data.training.stats.std),
                              "formula": "(pixel / 255 - mean) / std, per channel"},
            "classes": list(data.dataset.classes)}


def _check(inputs: _ModelInputs, fmt: ExportFormat, tmp: Path, refs: _References, options: ExportOptions,
           extra: dict[str, Any]) -> tuple[Parity, list[str]]:
    if fmt.name == "onnx":
        reference = refs.torch_logits(inputs.fp32)
        candidate = refs.onnx_logits(tmp)
        refs.last_fp32 = candidate
        result = parity(reference, candidate, refs.labels)
        if result.max_abs_diff > FP32_TOLERANCE:
            raise KdedgeError(f"{inputs.stage} onnx: the exported model differs from torch by "
                              f"{result.max_abs_diff:.2e} > {FP32_TOLERANCE} on the test images; not kept "
                              "(please report this model to kdedge)")
        return result, []
    reference = refs.fp32_onnx[inputs.stage]
    candidate = extra.pop("_logits") if "_logits" in extra else refs.onnx_logits(tmp)
    result = parity(reference, candidate, refs.labels)
    return result, gate_failures(result, options.thresholds)


# --------------------------------------------------------------------------------------------- producers
# Each writes one artifact to `tmp` and returns extra manifest fields.


def _sample(refs: _References) -> torch.Tensor:
    return torch.from_numpy(normalise(refs.images[:2], refs.data.training.stats))


def _produce_onnx(inputs: _ModelInputs, tmp: Path, options: ExportOptions, data: PreparedData, refs: _References,
                  calibration: np.ndarray) -> dict[str, Any]:
    export_onnx(inputs.fp32, _sample(refs), tmp)
    return {"exporter": "torch.onnx (dynamo)", "opset": OPSET}


def _produce_ort_int8(inputs: _ModelInputs, tmp: Path, options: ExportOptions, data: PreparedData,
                      refs: _References, calibration: np.ndarray) -> dict[str, Any]:
    fp32 = _artifact_path_from_tmp(tmp, "onnx")
    mode = options.quantization
    if mode == "auto":
        mode = "static" if has_conv(fp32) else "dynamic"  # Linear-only models: dynamic needs no calibration
    if mode == "static":
        quantize_static_qdq(fp32, tmp, calibration, method=options.calib_method, input_name=INPUT_NAME)
    else:
        quantize_dynamic_int8(fp32, tmp)
    return {"quantization": mode, "calibration_images": len(calibration) if mode == "static" else 0,
            "qdq": summarise_qdq(tmp).to_dict()}


def _produce_trt_qdq(inputs: _ModelInputs, tmp: Path, options: ExportOptions, data: PreparedData,
                     refs: _References, calibration: np.ndarray) -> dict[str, Any]:
    from kdedge.export.trt_qdq import export_trt_qdq

    if inputs.quantized is not None:
        export_trt_qdq(inputs.quantized, _sample(refs), tmp, calibration=None)
        source = "QAT scales (nvidia-modelopt)"
    else:
        batches = [torch.from_numpy(calibration[i:i + 64]) for i in range(0, len(calibration), 64)]
        export_trt_qdq(inputs.fp32, _sample(refs), tmp, calibration=batches)
        source = f"modelopt INT8 PTQ on {len(calibration)} training images"
    return {"quantization": source, "exporter": "torch.onnx (TorchScript)", "qdq": summarise_qdq(tmp).to_dict()}


def _produce_engine(inputs: _ModelInputs, tmp: Path, options: ExportOptions, data: PreparedData,
                    refs: _References, calibration: np.ndarray) -> dict[str, Any]:
    from kdedge.export.tensorrt_engine import build_engine, engine_logits, tensorrt_version

    source = _artifact_path_from_tmp(tmp, "onnx-int8-trt")
    engine = build_engine(source, max_batch=options.engine_max_batch, input_shape=data.input_shape)
    tmp.write_bytes(engine)
    logits = engine_logits(engine, normalise(refs.images, data.training.stats), batch_size=options.engine_max_batch)
    return {"_logits": logits, "tensorrt": tensorrt_version(), "gpu": torch.cuda.get_device_name(0),
            "built_from": source.name}


def _artifact_path_from_tmp(tmp: Path, format_name: str) -> Path:
    """The finished artifact of another format beside the one being written (it must exist)."""
    from kdedge.export.formats import FORMATS

    path = tmp.parent / f"model{FORMATS[format_name].suffix}"
    if not path.is_file():
        raise KdedgeError(f"{path}: missing; export the {format_name} format first")
    return path


_PRODUCERS = {"onnx": _produce_onnx, "onnx-int8": _produce_ort_int8, "onnx-int8-trt": _produce_trt_qdq,
              "engine": _produce_engine}
