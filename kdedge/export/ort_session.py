"""Running an exported ONNX model with ONNX Runtime on real images, the same way for every format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kdedge.errors import KdedgeError
from kdedge.train.batches import InputStats


def open_session(path: Path, *, threads: int | None = None, fix: str = "re-export it with --force"):
    """A CPU InferenceSession; a missing or corrupt file is a one-line error."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise KdedgeError("onnxruntime is not installed; pip install onnxruntime") from None
    if not Path(path).is_file():
        raise KdedgeError(f"{path}: file not found; {fix}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... classes
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise KdedgeError(f"{path}: not a loadable ONNX model ({reason}); {fix}") from None


def normalise(images: np.ndarray, stats: InputStats) -> np.ndarray:
    """uint8 [B,C,H,W] -> float32 model input, exactly as training prepares it."""
    mean = np.asarray(stats.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(stats.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / np.float32(255)) - mean) / std


def session_logits(session, images: np.ndarray, stats: InputStats, *, batch_size: int = 256) -> np.ndarray:
    """Logits of a whole uint8 image array, batched."""
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: normalise(images[i:i + batch_size], stats)})[0]
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs) if outputs else np.empty((0, 0), dtype=np.float32)
