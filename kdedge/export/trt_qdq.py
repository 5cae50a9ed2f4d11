"""INT8 in the TensorRT form: symmetric S8 Q/DQ (explicit quantization) from nvidia-modelopt.

Post-training: the fp32 torch model gets modelopt's INT8 fake quantizers (per-channel weights,
per-tensor activations), calibrated on real training images. A QAT student already has them. Either
way the ONNX comes from the TorchScript exporter: dynamo cannot trace modelopt's quantizers today.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from kdedge.export.onnx_fp32 import export_onnx
from kdedge.quant.modelopt_backend import quantize_for_qat


def export_trt_qdq(model: nn.Module, sample: torch.Tensor, path: Path, *,
                   calibration: list[torch.Tensor] | None) -> None:
    """Write the TensorRT-form INT8 ONNX of `model`. With `calibration` (batches of normalised real
    images) a copy of the fp32 model is quantized first; without it `model` must already be quantized."""
    model = model.eval().cpu()
    if calibration is not None:
        model = quantize_for_qat(copy.deepcopy(model), calibration)
    export_onnx(model.eval(), sample, path, exporter="torchscript")
