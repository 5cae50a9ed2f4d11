"""INT8 for ONNX Runtime on CPU: post-training quantization of the fp32 ONNX.

Static QDQ with per-channel S8 weights and U8 activations is the form that runs fast on x86 ORT
(symmetric S8 activations measured 2x slower than fp32 there). Models without convolutions use
dynamic quantization: their MatMuls quantize activations on the fly and need no calibration.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from kdedge.choices import CalibMethod
from kdedge.export.fallback import LayerScore, output_error
from kdedge.export.job import ExportJob, ExportOptions
from kdedge.export.onnx_fp32 import INPUT_NAME
from kdedge.export.qdq_graph import summarise_qdq

PERCENTILE = 99.999
# 7-bit weights: x86 u8*s8 kernels without VNNI sum pairs of products in 16 bits and saturate with
# full-range weights; measured here, a digits CNN fell to 87% top-1 agreement without it, 99.4% with it.
REDUCE_RANGE = True
ENTROPY_BINS = 2048  # the default (128) equals the quantized bin count and leaves entropy nothing to choose


def has_conv(path: Path) -> bool:
    return any(node.op_type == "Conv" for node in onnx.load(os.fspath(path)).graph.node)


class _Quantizer:
    """One prepared model (shape inference + graph clean-up, as ORT recommends; every node named, so any
    can be kept in fp32) quantized as often as asked, with ONNX Runtime's calibration computed once."""

    def __init__(self, fp32_path: Path, workdir: Path, calibration: np.ndarray | None, *, method: CalibMethod,
                 input_name: str, batch_size: int = 32) -> None:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.prepared, self.cache = workdir / "prepared.onnx", workdir / "calibration.json"
        self.calibration, self.method, self.input_name, self.batch_size = calibration, method, input_name, batch_size
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(os.fspath(fp32_path), os.fspath(self.prepared))
        model = onnx.load(os.fspath(self.prepared))
        used = {n.name for n in model.graph.node}
        for i, node in enumerate(model.graph.node):  # the pre-processor leaves the nodes it makes unnamed
            if not node.name:
                node.name = f"{node.op_type}_{i}" if f"{node.op_type}_{i}" not in used else f"kdedge_{node.op_type}_{i}"
                used.add(node.name)
        onnx.save(model, os.fspath(self.prepared))
        self.nodes = [(n.name, n.op_type) for n in model.graph.node]

    def quantize(self, out_path: Path, *, exclude: tuple[str, ...] = (), only: list[str] | None = None) -> None:
        if self.calibration is None:
            self._dynamic(out_path, exclude, only)
        else:
            self._static(out_path, exclude, only)

    def _static(self, out_path: Path, exclude: tuple[str, ...], only: list[str] | None) -> None:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        methods = {"minmax": (CalibrationMethod.MinMax, {}),
                   "percentile": (CalibrationMethod.Percentile, {"CalibPercentile": PERCENTILE}),
                   "entropy": (CalibrationMethod.Entropy, {"CalibNumBins": ENTROPY_BINS})}
        calibrate_method, extra = methods[self.method]
        images, name, size = self.calibration, self.input_name, self.batch_size

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._batches = iter([{name: images[i:i + size]} for i in range(0, len(images), size)])

            def get_next(self):
                return next(self._batches, None)

        # the calibration cache (ORT >= 1.24) lets every re-quantization reuse the first one's ranges
        cache = ({"calibration_cache_path": os.fspath(self.cache)}
                 if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {})
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(os.fspath(self.prepared), os.fspath(out_path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=calibrate_method, extra_options=extra,
                            nodes_to_exclude=list(exclude), nodes_to_quantize=only, **cache)

    def _dynamic(self, out_path: Path, exclude: tuple[str, ...], only: list[str] | None) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(os.fspath(self.prepared), os.fspath(out_path), weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=REDUCE_RANGE, nodes_to_exclude=list(exclude),
                             nodes_to_quantize=only)


def quantize_static_qdq(fp32_path: Path, out_path: Path, calibration: np.ndarray, *, method: CalibMethod,
                        input_name: str, batch_size: int = 32, exclude: tuple[str, ...] = ()) -> None:
    """QDQ INT8 model calibrated on `calibration` (normalised float32 real training images); the nodes
    in `exclude` stay fp32."""
    with tempfile.TemporaryDirectory(prefix="kdedge-quant-") as tmp:
        _Quantizer(fp32_path, Path(tmp), calibration, method=method, input_name=input_name,
                   batch_size=batch_size).quantize(out_path, exclude=exclude)


def quantize_dynamic_int8(fp32_path: Path, out_path: Path, exclude: tuple[str, ...] = ()) -> None:
    with tempfile.TemporaryDirectory(prefix="kdedge-quant-") as tmp:
        _Quantizer(fp32_path, Path(tmp), None, method="minmax", input_name=INPUT_NAME).quantize(out_path, exclude=exclude)


def settings(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    return {"calib_images": options.calib_images, "calib_method": options.calib_method,
            "quantization": options.quantization, "max_fp32_layers": options.max_fp32_layers}


def _mode(job: ExportJob) -> str:
    if job.options.quantization == "auto":  # Linear-only models: dynamic needs no calibration
        return "static" if has_conv(job.source) else "dynamic"
    return job.options.quantization


def rank_layers(job: ExportJob, tick: Callable[[int, int], None] = lambda done, total: None) -> list[LayerScore]:
    """Every node that quantizes alone to something other than fp32, by the output error of the model
    with only it quantized (kdedge/export/fallback.py), on job.held_out; most sensitive first."""
    from kdedge.export.ort_session import open_session

    assert job.source is not None and job.held_out is not None
    static = _mode(job) == "static"
    modules = _node_modules(job.source)
    reference = _run(open_session(job.source), job.held_out)
    scores = []
    with tempfile.TemporaryDirectory(prefix="kdedge-rank-") as tmp:
        quantizer = _Quantizer(job.source, Path(tmp), job.calibration if static else None,
                               method=job.options.calib_method, input_name=INPUT_NAME)
        for done, (name, op) in enumerate(quantizer.nodes):
            tick(done, len(quantizer.nodes))
            out = Path(tmp) / "one.onnx"
            quantizer.quantize(out, only=[name])
            error = output_error(_run(open_session(out), job.held_out), reference)
            if error > 0:  # 0: nothing of it was quantized (shape ops, or an op ORT leaves in fp32)
                scores.append(LayerScore(name, error, modules.get(name, ""), op))
    return sorted(scores, key=lambda s: -s.error)


def _run(session, images: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _node_modules(path: Path) -> dict[str, str]:
    """ONNX node name -> the torch module it was exported from, read from the namespace that torch's
    dynamo exporter writes into each node (": Net/dw: Sequential/dw.0: torch.nn.Conv2d/conv2d: aten...");
    a Conv with its BatchNorm folded in may carry the BatchNorm's name."""
    names = {}
    for node in onnx.load(os.fspath(path)).graph.node:
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        scopes = [part.split(":")[0].strip() for part in namespace.split("/")[1:-1]]
        if scopes:
            names[node.name] = scopes[-1]
    return names


def produce(job: ExportJob) -> dict[str, Any]:
    """The `onnx-int8` format, from the fp32 ONNX (`job.source`)."""
    mode = _mode(job)
    if mode == "static":
        quantize_static_qdq(job.source, job.out, job.calibration, method=job.options.calib_method,
                            input_name=INPUT_NAME, exclude=job.fp32_layers)
    else:
        quantize_dynamic_int8(job.source, job.out, exclude=job.fp32_layers)
    return {"quantization": mode, "calibration_images": len(job.calibration) if mode == "static" else 0,
            "fp32_layers": list(job.fp32_layers), "qdq": summarise_qdq(job.out).to_dict()}
