"""OpenVINO on the CPU (`kdedge[openvino]`): the run's fp32 ONNX and its QDQ INT8 ONNX, read as they are.

OpenVINO reads the Q/DQ pairs of the INT8 export and runs the quantized layers with its own INT8
kernels, so its accuracy and ECE come from its own logits, like every runtime's. Settings and why:
- INFERENCE_PRECISION_HINT f32: on CPUs with BF16 (AVX-512 BF16, AMX) OpenVINO would otherwise run
  "fp32" models in bf16, and an `openvino` row would not be the fp32 model;
- PERFORMANCE_HINT LATENCY (one stream) and a synchronous request, as the bench times every runtime;
- INFERENCE_NUM_THREADS = --threads (read back from the compiled model into the report);
- one model compiled per batch size with a static shape (the export's batch is dynamic; static shapes
  are what a deployment compiles, and are faster in OpenVINO's CPU plugin).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.errors import KdedgeError

INSTALL = "pip install 'kdedge[openvino]' (or pip install openvino)"


def openvino_version() -> str | None:
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


class OpenVinoPredictor:
    """Logits of a batch of normalised images from one ONNX file on OpenVINO's CPU plugin."""

    def __init__(self, path: Path, *, threads: int | None, input_shape: tuple[int, ...]) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise KdedgeError(f"--runtime openvino: openvino is not installed; {INSTALL}") from None
        self.path = Path(path)
        self._core = ov.Core()
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise _unreadable(self.path, exc) from None
        self._requests: dict[tuple[int, ...], Any] = {}
        self._compiled = None
        self._request((1, *input_shape))  # compiled now: a model OpenVINO cannot compile fails here, and
                                          # report() reads back the settings it compiled with

    def _request(self, shape: tuple[int, ...]):
        request = self._requests.get(shape)
        if request is None:
            model = self._model.clone()
            model.reshape({model.inputs[0].any_name: list(shape)})
            try:
                compiled = self._core.compile_model(model, "CPU", self._config)
            except Exception as exc:
                raise _unreadable(self.path, exc) from None
            self._compiled = compiled
            request = self._requests[shape] = compiled.create_infer_request()
        return request

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = self._request(tuple(x.shape))
        request.infer([x])
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)  # the buffer is reused

    def report(self) -> dict[str, Any]:
        """What OpenVINO compiled with (read back, not assumed): threads, precision, streams, version."""
        return {"openvino": {"version": openvino_version(),
                             "inference_num_threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")),
                             "inference_precision": _type_name(self._compiled.get_property("INFERENCE_PRECISION_HINT")),
                             "num_streams": int(self._compiled.get_property("NUM_STREAMS"))}}


def _unreadable(path: Path, exc: Exception) -> KdedgeError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return KdedgeError(f"{path}: OpenVINO cannot run this ONNX model ({reason}); leave it out with "
                       "--runtime torch,ort,ort-int8")


def _type_name(value: Any) -> str:
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)  # ov.Type -> "f32"
