"""Running an exported ONNX model with ONNX Runtime on real images, the same way for every format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kdedge.errors import KdedgeError
from kdedge.inference import batched
from kdedge.inputs import InputStats, normalise


def open_session(path: Path, *, threads: int | None = None, fix: str = "re-export it with --force",
                 providers: tuple[str, ...] = ("CPUExecutionProvider",), content: bytes | None = None):
    """An InferenceSession (CPU unless other providers are given); a missing or corrupt file is a one-line
    error. `content`: the model's bytes, already read from `path` (named in messages)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise KdedgeError("onnxruntime is not installed; pip install onnxruntime") from None
    if content is None and not Path(path).is_file():
        raise KdedgeError(f"{path}: file not found; {fix}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(os.fspath(path) if content is None else content, sess_options=options,
                                    providers=list(providers))
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... classes
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise KdedgeError(f"{path}: not a loadable ONNX model ({reason}); {fix}") from None


def session_logits(session, images: np.ndarray, stats: InputStats, *, batch_size: int = 256) -> np.ndarray:
    """Logits of a whole uint8 image array, batched."""
    return batched(lambda x: run_any_batch(session, normalise(x, stats))[0], images, batch_size)


def run_any_batch(session, x: np.ndarray, output_names: list[str] | None = None) -> list[np.ndarray]:
    """The session's outputs for a batch of any size, also when the model was exported with a fixed batch
    size (a user's own ONNX teacher often is): then in chunks of that size, the last one zero-padded."""
    name, dim = session.get_inputs()[0].name, session.get_inputs()[0].shape[0]
    if not isinstance(dim, int) or dim <= 0 or dim == len(x):
        return session.run(output_names, {name: x})
    parts = []
    for start in range(0, len(x), dim):
        chunk = x[start:start + dim]
        padded = np.concatenate([chunk, np.zeros((dim - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        parts.append([out[:len(chunk)] for out in session.run(output_names, {name: padded})])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))] if parts else []
