"""INT8 in the TensorRT form: symmetric S8 Q/DQ (explicit quantization) from nvidia-modelopt.

Post-training: the fp32 torch model gets modelopt's INT8 fake quantizers (per-channel weights,
per-tensor activations), calibrated on real training images. A QAT student already has them. Either
way the ONNX comes from the TorchScript exporter: dynamo cannot trace modelopt's quantizers today.
Layers kept in fp32 by the fallback (kdedge/export/fallback.py) are torch modules whose quantizers are
disabled: no Q/DQ around them, so TensorRT runs them in fp32/fp16.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from kdedge.export.fallback import LayerScore, output_error
from kdedge.export.job import ExportJob, ExportOptions
from kdedge.export.onnx_fp32 import export_onnx
from kdedge.export.qdq_graph import summarise_qdq
from kdedge.quant.modelopt_backend import quantize_for_qat

CALIBRATION_BATCH = 64


def export_trt_qdq(model: nn.Module, sample: torch.Tensor, path: Path, *,
                   calibration: list[torch.Tensor] | None, fp32_layers: tuple[str, ...] = ()) -> None:
    """Write the TensorRT-form INT8 ONNX of `model`. With `calibration` (batches of normalised real
    images) a copy of the fp32 model is quantized first; without it `model` must already be quantized.
    The modules named in `fp32_layers` lose their quantizers (on a copy: `model` is not changed)."""
    export_onnx(_quantized(model, calibration, fp32_layers).eval(), sample, path, exporter="torchscript")


def _quantized(model: nn.Module, calibration: list[torch.Tensor] | None, fp32_layers: tuple[str, ...]) -> nn.Module:
    model = model.eval().cpu()
    if calibration is not None:
        model = quantize_for_qat(copy.deepcopy(model), calibration)
    elif fp32_layers:
        model = copy.deepcopy(model)
    groups = quantizer_groups(model)
    unknown = [name for name in fp32_layers if name not in groups]
    if unknown:
        raise ValueError(f"no quantized module named {unknown[0]!r}")
    for name in fp32_layers:
        for quantizer in groups[name]:
            quantizer.disable()
    return model


def quantizer_groups(model: nn.Module) -> dict[str, list[nn.Module]]:
    """module name -> its enabled fake quantizers (input, weight, ...): what keeping a layer in fp32 disables."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    groups = {}
    for name, module in model.named_modules():
        quantizers = [q for q in module.children() if isinstance(q, TensorQuantizer) and q.is_enabled]
        if quantizers and not isinstance(module, TensorQuantizer):
            groups[name] = quantizers
    return groups


def settings(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    own = {} if own_scales else {"calib_images": options.calib_images, "calib_method": "max (modelopt)"}
    return {**own, "max_fp32_layers": options.max_fp32_layers}


def _calibration_batches(job: ExportJob) -> list[torch.Tensor] | None:
    if job.quantized is not None:
        return None
    return [torch.from_numpy(job.calibration[i:i + CALIBRATION_BATCH])
            for i in range(0, len(job.calibration), CALIBRATION_BATCH)]


def rank_layers(job: ExportJob, tick: Callable[[int, int], None] = lambda done, total: None) -> list[LayerScore]:
    """The quantized modules by the output error of the model with only that module's quantizers on
    (kdedge/export/fallback.py), measured in torch on job.held_out; most sensitive first."""
    assert job.held_out is not None
    model = _quantized(job.quantized if job.quantized is not None else job.fp32, _calibration_batches(job), ())
    if job.quantized is not None:
        model = copy.deepcopy(model)  # the QAT model's quantizers are toggled below
    groups = quantizer_groups(model)
    images = torch.from_numpy(np.ascontiguousarray(job.held_out))
    scores = []
    with torch.no_grad():
        reference = job.fp32.eval()(images).numpy()
        for done, (name, quantizers) in enumerate(groups.items()):
            tick(done, len(groups))
            for other in groups.values():
                for q in other:
                    q.disable()
            for q in quantizers:
                q.enable()
            error = output_error(model(images).numpy(), reference)
            scores.append(LayerScore(name, error, name, type(model.get_submodule(name)).__name__))
    return sorted(scores, key=lambda s: -s.error)


def produce(job: ExportJob) -> dict[str, Any]:
    """The `onnx-int8-trt` format: a QAT student with its own scales, any other model calibrated here."""
    if job.quantized is not None:
        export_trt_qdq(job.quantized, job.sample(), job.out, calibration=None, fp32_layers=job.fp32_layers)
        source = "QAT scales (nvidia-modelopt)"
    else:
        export_trt_qdq(job.fp32, job.sample(), job.out, calibration=_calibration_batches(job),
                       fp32_layers=job.fp32_layers)
        source = f"modelopt INT8 PTQ on {len(job.calibration)} training images"
    return {"quantization": source, "exporter": "torch.onnx (TorchScript)", "fp32_layers": list(job.fp32_layers),
            "qdq": summarise_qdq(job.out).to_dict()}
