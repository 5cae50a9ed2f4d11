"""INT8 in the TensorRT form: symmetric S8 Q/DQ (explicit quantization) from nvidia-modelopt.

Post-training: the fp32 torch model gets modelopt's INT8 fake quantizers (per-channel weights,
per-tensor activations), calibrated on real training images. A QAT student already has them. Either
way the ONNX comes from the TorchScript exporter: dynamo cannot trace modelopt's quantizers today.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdedge.export.job import ExportJob, ExportOptions
from kdedge.export.onnx_fp32 import export_onnx
from kdedge.export.qdq_graph import summarise_qdq
from kdedge.quant.modelopt_backend import quantize_for_qat

CALIBRATION_BATCH = 64


def export_trt_qdq(model: nn.Module, sample: torch.Tensor, path: Path, *,
                   calibration: list[torch.Tensor] | None) -> None:
    """Write the TensorRT-form INT8 ONNX of `model`. With `calibration` (batches of normalised real
    images) a copy of the fp32 model is quantized first; without it `model` must already be quantized."""
    model = model.eval().cpu()
    if calibration is not None:
        model = quantize_for_qat(copy.deepcopy(model), calibration)
    export_onnx(model.eval(), sample, path, exporter="torchscript")


def settings(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    return {} if own_scales else {"calib_images": options.calib_images, "calib_method": "max (modelopt)"}


def produce(job: ExportJob) -> dict[str, Any]:
    """The `onnx-int8-trt` format: a QAT student with its own scales, any other model calibrated here."""
    if job.quantized is not None:
        export_trt_qdq(job.quantized, job.sample(), job.out, calibration=None)
        source = "QAT scales (nvidia-modelopt)"
    else:
        calibration = job.calibration
        batches = [torch.from_numpy(calibration[i:i + CALIBRATION_BATCH])
                   for i in range(0, len(calibration), CALIBRATION_BATCH)]
        export_trt_qdq(job.fp32, job.sample(), job.out, calibration=batches)
        source = f"modelopt INT8 PTQ on {len(calibration)} training images"
    return {"quantization": source, "exporter": "torch.onnx (TorchScript)", "qdq": summarise_qdq(job.out).to_dict()}
