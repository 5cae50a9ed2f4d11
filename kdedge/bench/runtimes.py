"""The runtimes `kdedge bench` measures a model on: one table, each entry a way to get logits from a
batch of normalised images on a device. A runtime that is not installed is refused with the extra to
install; one without the export it needs says to run `kdedge export`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.io import sha256_file

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Runtime:
    name: str
    export_format: str | None  # the `kdedge export` format it runs (None: the torch model itself)
    devices: tuple[str, ...]
    module: str                # what must be importable
    install: str               # how to get it


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    # on a Jetson, torch runs on its GPU when NVIDIA's JetPack wheel is installed, ONNX Runtime on its CPU
    Runtime("torch", None, ("cpu", "cuda", "jetson"), "torch", "pip install torch"),
    Runtime("ort", "onnx", ("cpu", "cuda", "jetson"), "onnxruntime", "pip install onnxruntime (onnxruntime-gpu for cuda)"),
    Runtime("ort-int8", "onnx-int8", ("cpu", "jetson"), "onnxruntime", "pip install onnxruntime"),
    Runtime("trt", "engine", ("cuda", "jetson"), "tensorrt", "pip install 'kdedge[trt]' (NVIDIA's index) or JetPack"),
)}


def parse_runtimes(names: str | None, device: str) -> list[Runtime]:
    """The runtimes asked for (default: every one that fits the device and is installed)."""
    from importlib.util import find_spec

    if names is None:
        # the engine runs through CUDA torch tensors: without them `trt` is left out of the default set
        # (asked for by name, it says what is missing)
        return [r for r in RUNTIMES.values() if device in r.devices and find_spec(r.module) is not None
                and (r.name != "trt" or torch.cuda.is_available())]
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in RUNTIMES:
            raise KdedgeError(f"--runtime {name!r}: unknown runtime; valid: {', '.join(RUNTIMES)}")
        runtime = RUNTIMES[name]
        if device not in runtime.devices:
            raise KdedgeError(f"--runtime {name}: not available on --device {device} "
                              f"(runs on: {', '.join(runtime.devices)})")
        if find_spec(runtime.module) is None:
            raise KdedgeError(f"--runtime {name}: {runtime.module} is not installed; {runtime.install}")
        chosen.append(runtime)
    return chosen


def verified_export(run_root: Path, exports: dict, stage: str, fmt: str) -> Path:
    """The path of a recorded, complete export (checksum equal to the manifest's)."""
    entry = exports.get(stage, {}).get(fmt)
    if entry is None:
        raise KdedgeError(f"{run_root}: no {fmt} export of {stage}; run `kdedge export {run_root} --int8` first")
    path = run_root / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise KdedgeError(f"{path}: missing or changed since `kdedge export` recorded it; "
                          f"re-export with `kdedge export {run_root} --int8 --force`")
    return path


def torch_predictor(model: nn.Module, device: torch.device) -> Predict:
    model = model.to(device).eval()

    @torch.inference_mode()
    def predict(x: np.ndarray) -> np.ndarray:
        out = model(torch.from_numpy(x).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()  # timings must cover the work, not its launch
        return out.float().cpu().numpy()

    return predict


def ort_predictor(path: Path, *, threads: int | None, device: str) -> Predict:
    from kdedge.export.ort_session import open_session

    session = open_session(path, threads=threads)
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise KdedgeError("--runtime ort on cuda needs onnxruntime-gpu (CUDAExecutionProvider); "
                              "pip install onnxruntime-gpu")
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def check_input_shape(path: Path, expected: tuple[int, ...]) -> None:
    """An exported model must take the data's [C, H, W]; say which differs instead of failing in ORT."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.dim_value else None for d in dims)[1:]
    if len(shape) != len(expected) or any(s is not None and s != e for s, e in zip(shape, expected, strict=False)):
        raise KdedgeError(f"{path}: the model takes inputs [batch, {', '.join(map(str, shape))}] but the test "
                          f"data is [batch, {', '.join(map(str, expected))}]; export it from this run's data")
