"""Producers of the MC-dropout export formats (kdedge/export/onnx_mc.py builds the graph):

* ``onnx-mc``: the fp32 MC graph, checked against the torch MC model fed the same uniforms (the MC
  probabilities within FED_TOLERANCE on every test image, else nothing is written);
* ``onnx-mc-int8``: ONNX Runtime INT8 of that graph, quantized by the plain INT8 export's quantizer
  (kdedge/export/ort_int8.py: static QDQ, per-channel S8 weights, U8 activations, or dynamic without convs)
  with the MC statistics after the classifier (softmax, means, entropy, variance) left in fp32;
* ``onnx-mc-int8-trt``: the TensorRT form, symmetric S8 Q/DQ (zero points 0) from nvidia-modelopt like
  kdedge/export/trt_qdq.py, exported by the TorchScript exporter.

Both INT8 forms pass their own gate: the parity gate (kdedge/export/parity.py) on the MC-averaged
prediction against the fp32 MC graph, both fed the same uniforms, so the gate measures quantization and
not Monte-Carlo noise. Models without an active nn.Dropout are refused by `not_applicable`.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from kdedge.choices import CalibMethod
from kdedge.export.job import LOGITS, REFERENCE_LOGITS, ExportJob, ExportOptions
from kdedge.export.onnx_fp32 import INPUT_NAME, export_onnx
from kdedge.export.onnx_mc import (MC_OUTPUTS, McExportModel, debug_session, export_mc_onnx, fed_batches,
                                   graph_record, mask_shapes, mc_model, not_applicable, session_fed, torch_fed)
from kdedge.export.qdq_graph import summarise_qdq
from kdedge.inputs import normalise

FED_TOLERANCE = 1e-4  # max |MC probability difference| of the fp32 MC graph and torch, fed the same uniforms
_WEIGHTED = ("Conv", "Gemm", "MatMul")

__all__ = ["not_applicable", "produce", "produce_int8", "produce_trt", "settings", "settings_int8", "settings_trt"]


def settings(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    return {"mc_samples": options.mc_samples}


def settings_int8(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    return {"mc_samples": options.mc_samples, "calib_images": options.calib_images,
            "calib_method": options.calib_method, "quantization": options.quantization}


def settings_trt(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    own = {} if own_scales else {"calib_images": options.calib_images, "calib_method": "max (modelopt)"}
    return {"mc_samples": options.mc_samples, **own}


def _test_inputs(job: ExportJob) -> np.ndarray:
    return normalise(job.test_images, job.stats)


def _fed_outputs(session, names: list[str], images: np.ndarray, shapes, samples: int) -> list[np.ndarray]:
    """The MC outputs of a debug session over `images`, fed the seeded uniforms of fed_batches."""
    parts = [session_fed(session, x, names, u) for x, u in fed_batches(images, shapes, samples)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(MC_OUTPUTS))]


def _stats_diffs(candidate: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """Per MC output: the largest and the mean |difference| (what INT8 does to the uncertainty)."""
    out = {}
    for name, c, r in zip(MC_OUTPUTS, candidate, reference):
        d = np.abs(c.astype(np.float64) - r)
        out[name] = {"max_abs_diff": float(d.max()) if d.size else 0.0, "mean_abs_diff": float(d.mean()) if d.size else 0.0}
    return out


def produce(job: ExportJob) -> dict[str, Any]:
    """The `onnx-mc` format: fp32, checked against the torch MC model with the same uniforms."""
    from kdedge.errors import KdedgeError

    samples = job.options.mc_samples
    wrapper = export_mc_onnx(job.fp32, samples, job.sample(), job.out)
    shapes = mask_shapes(wrapper, job.sample())
    session, names = debug_session(job.out)
    images = _test_inputs(job)
    candidate = _fed_outputs(session, names, images, shapes, samples)
    parts = [torch_fed(wrapper, torch.from_numpy(x), u) for x, u in fed_batches(images, shapes, samples)]
    reference = [np.concatenate([p[k] for p in parts]) for k in range(len(MC_OUTPUTS))]
    diffs = _stats_diffs(candidate, reference)
    if diffs["probs"]["max_abs_diff"] > FED_TOLERANCE:
        raise KdedgeError(f"{job.out.name}: the MC graph's probabilities differ from torch by "
                          f"{diffs['probs']['max_abs_diff']:.2e} > {FED_TOLERANCE} with the same dropout masks; "
                          "not kept (please report this model to kdedge)")
    return {**graph_record(job.out, wrapper), "exporter": "torch.onnx (dynamo)",
            "check": "fed uniforms: the graph against the torch MC model, same masks", "vs_torch": diffs,
            LOGITS: candidate[0], REFERENCE_LOGITS: reference[0]}


def statistics_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes after the last Conv/Gemm/MatMul (the classifier): the MC statistics, kept in fp32 (U8
    softmax outputs would put the probabilities, entropy and variance on a 1/256 grid)."""
    nodes = list(model.graph.node)
    last = max((i for i, n in enumerate(nodes) if n.op_type in _WEIGHTED), default=None)
    if last is None:
        return []
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    seen: set[int] = set()
    queue = deque(nodes[last].output)
    while queue:
        for i in consumers.get(queue.popleft(), []):
            if i not in seen:
                seen.add(i)
                queue.extend(nodes[i].output)
    return [nodes[i].name for i in sorted(seen)]


def _compare_fed(job: ExportJob, reference_path: Path, candidate_path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Both MC graphs' outputs on the test split with the same uniforms (the gate's inputs)."""
    shapes = mask_shapes(mc_model(job.fp32, job.options.mc_samples), job.sample())
    images = _test_inputs(job)
    ref_session, ref_names = debug_session(reference_path)
    cand_session, cand_names = debug_session(candidate_path)
    if len(ref_names) != len(cand_names):
        raise ValueError(f"{candidate_path.name}: {len(cand_names)} random draws, the fp32 MC graph has {len(ref_names)}")
    samples = job.options.mc_samples
    return (_fed_outputs(cand_session, cand_names, images, shapes, samples),
            _fed_outputs(ref_session, ref_names, images, shapes, samples))


def quantize_mc(fp32_path: Path, out_path: Path, calibration: np.ndarray | None, *,
                method: CalibMethod = "minmax") -> int:
    """ONNX Runtime INT8 of an MC graph with the plain INT8 export's quantizer (static QDQ calibrated on
    `calibration`, normalised images; dynamic when None); the MC statistics stay fp32. Returns how many
    nodes were kept in fp32."""
    from kdedge.export.ort_int8 import _Quantizer  # the plain INT8 export's quantizer, reused

    with tempfile.TemporaryDirectory(prefix="kdedge-mc-quant-") as tmp:
        quantizer = _Quantizer(fp32_path, Path(tmp), calibration, method=method, input_name=INPUT_NAME)
        kept = statistics_nodes(onnx.load(os.fspath(quantizer.prepared)))
        quantizer.quantize(out_path, exclude=tuple(kept))
    return len(kept)


def produce_int8(job: ExportJob) -> dict[str, Any]:
    """The `onnx-mc-int8` format from the `onnx-mc` graph (job.source), by ONNX Runtime's quantizer."""
    from kdedge.export.ort_int8 import _mode

    assert job.source is not None
    mode = _mode(job)
    kept = quantize_mc(job.source, job.out, job.calibration if mode == "static" else None,
                       method=job.options.calib_method)
    candidate, reference = _compare_fed(job, job.source, job.out)
    return {"quantization": mode, "calibration_images": len(job.calibration) if mode == "static" else 0,
            "fp32_statistics_nodes": kept, "qdq": summarise_qdq(job.out).to_dict(),
            "mc_samples": job.options.mc_samples, "check": "fed uniforms: against the fp32 MC graph, same masks",
            "vs_fp32_mc": _stats_diffs(candidate, reference), LOGITS: candidate[0], REFERENCE_LOGITS: reference[0]}


def produce_trt(job: ExportJob) -> dict[str, Any]:
    """The `onnx-mc-int8-trt` format: modelopt's symmetric Q/DQ (a QAT student's own scales, any other
    model calibrated here, like kdedge/export/trt_qdq.py), with the MC graph around it."""
    from kdedge.export.trt_qdq import _calibration_batches, _quantized

    assert job.source is not None
    base = job.quantized if job.quantized is not None else job.fp32
    quantized = _quantized(base, _calibration_batches(job), job.fp32_layers)
    wrapper: McExportModel = mc_model(quantized, job.options.mc_samples)
    export_onnx(wrapper, job.sample(), job.out, exporter="torchscript", output_names=MC_OUTPUTS)
    candidate, reference = _compare_fed(job, job.source, job.out)
    qdq = summarise_qdq(job.out)
    return {"quantization": "QAT scales (nvidia-modelopt)" if job.quantized is not None
            else f"modelopt INT8 PTQ on {len(job.calibration)} training images",
            "exporter": "torch.onnx (TorchScript)", "qdq": qdq.to_dict(), "mc_samples": job.options.mc_samples,
            "ops": sorted({n.op_type for n in onnx.load(os.fspath(job.out)).graph.node}),
            "check": "fed uniforms: against the fp32 MC graph, same masks",
            "vs_fp32_mc": _stats_diffs(candidate, reference), LOGITS: candidate[0], REFERENCE_LOGITS: reference[0]}
