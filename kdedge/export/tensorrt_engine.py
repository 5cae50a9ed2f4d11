"""TensorRT engine from the TensorRT-form (explicitly quantized, Q/DQ) ONNX, with the public Python API.

Kept thin on purpose: parse the ONNX, build with INT8 (the Q/DQ scales say what runs in INT8; no
implicit calibrator, those are deprecated) and FP16 allowed for the rest, serialize. Engines are tied
to the GPU and TensorRT version they were built with, so build them on the target device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdedge.errors import KdedgeError
from kdedge.extras import TENSORRT_MISSING
from kdedge.inference import batched


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise KdedgeError(TENSORRT_MISSING) from None
    return trt


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


def build_engine(onnx_path: Path, *, max_batch: int, input_shape: tuple[int, int, int],
                 workspace_bytes: int = 1 << 30) -> bytes:
    """The serialized engine; one optimisation profile for batch 1..max_batch (optimum = max_batch)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise KdedgeError(f"{onnx_path}: TensorRT cannot parse it ({errors[:200]}); re-export with --force")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.set_flag(trt.BuilderFlag.INT8)
    if builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, *input_shape), (max_batch, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise KdedgeError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    return bytes(serialized)


class EngineRunner:
    """Runs a serialized engine on CUDA through torch tensors (no pycuda needed)."""

    def __init__(self, engine_bytes: bytes) -> None:
        import torch

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise KdedgeError("running a TensorRT engine needs a CUDA GPU; none is visible to torch")
        self._torch = torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise KdedgeError("TensorRT could not load the engine (built by another TensorRT version or GPU?); "
                              "rebuild it on this device with `kdedge export RUN --format engine --force`")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise KdedgeError("TensorRT could not create an execution context for the engine (out of GPU memory?)")
        self._float = trt.DataType.FLOAT
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        # in the engine's order: the first is the logits of a plain export, `probs` of an MC graph
        self.outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[self.outputs[0]]

    def run_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the engine for one batch, by name."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        if not self._context.set_input_shape(self._input, tuple(x.shape)):
            raise KdedgeError(f"TensorRT engine refused input shape {tuple(x.shape)} (outside its optimisation "
                              "profile); bench with a --batch the engine was built for")
        self._context.set_tensor_address(self._input, x.data_ptr())
        outs = {}
        for name in self.outputs:
            if self._engine.get_tensor_dtype(name) != self._float:
                raise KdedgeError(f"TensorRT engine output {name!r} is {self._engine.get_tensor_dtype(name)}, "
                                  "not float32; re-export the model with kdedge")
            outs[name] = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            self._context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise KdedgeError("TensorRT engine execution failed")
        stream.synchronize()
        return {name: out.cpu().numpy() for name, out in outs.items()}


def engine_logits(engine_bytes: bytes, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Logits of normalised float32 images, batched up to the engine's profile maximum."""
    return batched(EngineRunner(engine_bytes), images, batch_size)
