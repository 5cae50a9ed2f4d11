"""The `engine` format: a TensorRT engine built on this GPU from the TensorRT-form INT8 ONNX. Apart
from kdedge/export/tensorrt_engine.py (the builder and runner), which `kdedge bench` uses without this."""

from __future__ import annotations

from typing import Any

import torch

from kdedge.export import trt_qdq
from kdedge.export.job import LOGITS, ExportJob, ExportOptions
from kdedge.export.tensorrt_engine import build_engine, engine_logits, tensorrt_version
from kdedge.extras import Requirement
from kdedge.inputs import normalise


def _no_cuda_gpu() -> str | None:
    if torch.cuda.is_available():
        return None
    return ("TensorRT engines are built on the GPU that runs them and no CUDA GPU is visible here; run the export "
            "on the target device")


CUDA_GPU = Requirement(None, _no_cuda_gpu)


def settings(options: ExportOptions, own_scales: bool) -> dict[str, Any]:
    # the engine keeps the INT8 scales of the ONNX it is built from, so it records how they were made
    return {**trt_qdq.settings(options, own_scales), "max_batch": options.engine_max_batch}


def produce(job: ExportJob) -> dict[str, Any]:
    """Build from `job.source` (the onnx-int8-trt file); ONNX Runtime cannot run the result, so its parity
    logits come from the engine itself, on this GPU."""
    engine = build_engine(job.source, max_batch=job.options.engine_max_batch, input_shape=job.input_shape)
    job.out.write_bytes(engine)
    logits = engine_logits(engine, normalise(job.test_images, job.stats), batch_size=job.options.engine_max_batch)
    return {LOGITS: logits, "tensorrt": tensorrt_version(), "gpu": torch.cuda.get_device_name(0),
            "built_from": job.source.name}
