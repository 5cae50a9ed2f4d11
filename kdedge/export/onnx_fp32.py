"""fp32 ONNX export: one file, dynamic batch dimension, checked against torch before it is kept."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdedge.export.job import ExportJob, ExportOptions

OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters print progress and warn about things that do not concern a user (torchvision ops,
    deprecations); keep the terminal for kdedge's own messages. Errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, *, exporter: str = "dynamo",
                output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
    """Write `model` (eval mode, CPU) to `path` with a dynamic batch dimension.

    dynamo is torch's current exporter; `torchscript` is kept for models it cannot trace yet
    (nvidia-modelopt's fake-quant modules, whose Q/DQ nodes TensorRT reads). A model with several outputs
    names them in `output_names` (each with the batch as its first dimension)."""
    model = model.eval().cpu()
    sample = sample.cpu()
    if exporter == "dynamo":
        from importlib.util import find_spec

        if find_spec("onnxscript") is None:
            from kdedge.errors import KdedgeError

            raise KdedgeError("ONNX export needs onnxscript (torch's dynamo exporter); pip install onnxscript")
    with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(
                model, (sample,), str(path), input_names=[INPUT_NAME], output_names=list(output_names),
                opset_version=OPSET, dynamo=True, external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},))
        elif exporter == "torchscript":
            torch.onnx.export(
                model, (sample,), str(path), input_names=[INPUT_NAME], output_names=list(output_names),
                opset_version=17, dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in output_names}})
        else:
            raise ValueError(f"unknown exporter {exporter!r}")


def settings(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    return {"opset": OPSET}


def produce(job: ExportJob) -> dict[str, Any]:
    """The `onnx` format: the fp32 reference that the INT8 formats are gated against."""
    own_onnx = getattr(job.fp32, "kdedge_onnx", None)
    if own_onnx is not None:  # a teacher given as ONNX is kept as it is (only its input/output renamed)
        job.out.write_bytes(own_onnx())
        return {"exporter": "the teacher's own ONNX file, input and output renamed", "opset": OPSET}
    export_onnx(job.fp32, job.sample(), job.out)
    return {"exporter": "torch.onnx (dynamo)", "opset": OPSET}
