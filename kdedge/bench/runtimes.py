"""The runtimes `kdedge bench` measures a model on: one table keyed by name, each row carrying what it
needs (devices, module, install hint) and how to open a predictor (logits of a batch of normalised
images) for one model of the run. Adding a runtime is one row here plus the module its factory uses.

A runtime that is not installed is refused with the extra to install; a model without the export a
runtime runs is left out of that runtime's results (not an error); a changed export is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.export.ort_session import open_session
from kdedge.export.tensorrt_engine import EngineRunner
from kdedge.io import sha256_file
from kdedge.layout import BENCH_DIR, run_file

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BenchModel:
    """One model of the run as the bench sees it: what a runtime's factory opens a predictor from."""

    stage: str
    model: nn.Module            # the torch model (a QAT student with its fake quantizers)
    weights: Path               # its model file
    run_root: Path
    exports: dict[str, Any]     # the manifest's exports (every stage)
    engine: Path | None         # on a Jetson: the engine trtexec built there for this model
    device: str                 # cpu | cuda | jetson
    torch_device: torch.device
    threads: int | None
    input_shape: tuple[int, ...]

    def export_file(self, fmt: str) -> Path | None:
        """The checked file of this model's `fmt` export; None when it was not exported."""
        if fmt not in self.exports.get(self.stage, {}):
            return None  # e.g. no INT8 export of the teacher: reported as absent, not an error
        return verified_export(self.run_root, self.exports, self.stage, fmt)


@dataclass(frozen=True)
class Predictor:
    predict: Predict
    file: Path                                          # its size on disk is the model's size on this runtime
    report: dict[str, Any] = field(default_factory=dict)  # more fields for this runtime's report entry


@dataclass(frozen=True)
class Runtime:
    name: str
    export_format: str | None   # the `kdedge export` format it runs (None: the torch model itself)
    devices: tuple[str, ...]
    module: str                 # what must be importable
    install: str                # how to get it
    factory: Callable[[Runtime, BenchModel], Predictor | None]  # None: nothing of this model to run here
    needs_cuda: bool = False    # left out of the default set when torch sees no CUDA GPU
    default: bool = True        # in the default set (no --runtime) when installed; else only when named
    precision: str = "fp32"     # what its export computes in (the recommendation compares INT8 with fp32)

    def predictor(self, model: BenchModel) -> Predictor | None:
        return self.factory(self, model)

    @property
    def family(self) -> str:
        """The runtime without its precision: `ort-int8` and `ort` are one family (INT8 vs its own fp32)."""
        return self.name.removesuffix("-int8")


def _torch(runtime: Runtime, m: BenchModel) -> Predictor | None:
    if not getattr(m.model, "runs_in_torch", True):
        return None  # a teacher given as ONNX runs in ONNX Runtime even behind its nn.Module: timed as `ort`
    return Predictor(torch_predictor(m.model, m.torch_device), m.weights)


def _ort(runtime: Runtime, m: BenchModel) -> Predictor | None:
    path = m.export_file(runtime.export_format)
    if path is None:
        return None
    check_input_shape(path, m.input_shape)
    return Predictor(ort_predictor(path, threads=m.threads, device=m.device), path)


def _trt(runtime: Runtime, m: BenchModel) -> Predictor | None:
    if m.device == "jetson":
        # engines do not move between GPUs: a Jetson runs the engine trtexec just built on it
        if m.engine is None:
            return None
        return Predictor(EngineRunner(m.engine.read_bytes()), m.engine,
                         {"engine": f"{BENCH_DIR}/{m.engine.parent.name}/{m.engine.name}"})
    path = m.export_file(runtime.export_format)
    if path is None:
        return None
    return Predictor(EngineRunner(path.read_bytes()), path)


def _openvino(runtime: Runtime, m: BenchModel) -> Predictor | None:
    from kdedge.bench.openvino_runtime import OpenVinoPredictor

    path = m.export_file(runtime.export_format)
    if path is None:
        return None
    check_input_shape(path, m.input_shape)
    predict = OpenVinoPredictor(path, threads=m.threads, input_shape=tuple(m.input_shape))
    return Predictor(predict, path, predict.report())


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    # on a Jetson, torch runs on its GPU when NVIDIA's JetPack wheel is installed, ONNX Runtime on its CPU
    Runtime("torch", None, ("cpu", "cuda", "jetson"), "torch", "pip install torch", _torch),
    Runtime("ort", "onnx", ("cpu", "cuda", "jetson"), "onnxruntime",
            "pip install onnxruntime (onnxruntime-gpu for cuda)", _ort),
    Runtime("ort-int8", "onnx-int8", ("cpu", "jetson"), "onnxruntime", "pip install onnxruntime", _ort,
            precision="int8"),
    # OpenVINO's CPU plugin on the same two ONNX files (x86 CPUs; its ARM build is not tested here)
    Runtime("openvino", "onnx", ("cpu",), "openvino", "pip install 'kdedge[openvino]'", _openvino),
    Runtime("openvino-int8", "onnx-int8", ("cpu",), "openvino", "pip install 'kdedge[openvino]'", _openvino,
            precision="int8"),
    # the engine runs through CUDA torch tensors
    Runtime("trt", "engine", ("cuda", "jetson"), "tensorrt", "pip install 'kdedge[trt]' (NVIDIA's index) or JetPack",
            _trt, needs_cuda=True, precision="int8"),
)}


def parse_runtimes(names: str | None, device: str) -> list[Runtime]:
    """The runtimes asked for (default: every default runtime that fits the device and is installed)."""
    from importlib.util import find_spec

    if names is None:
        # a runtime that needs CUDA is left out of the default set without it (asked for by name, it
        # says what is missing)
        return [r for r in RUNTIMES.values() if r.default and device in r.devices and find_spec(r.module) is not None
                and (not r.needs_cuda or torch.cuda.is_available())]
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
    if not isinstance(entry, dict):
        raise KdedgeError(f"{run_root / 'manifest.json'}: exports.{stage}.{fmt} is not a record; "
                          f"re-export with `kdedge export {run_root} --int8 --force`")
    # a manifest may be crafted: only a regular file inside the run is opened (absent: the hint below)
    path = run_file(run_root, entry.get("file"), what=f"exports.{stage}.{fmt}.file", must_exist=False)
    if not path.is_file() or sha256_file(path) != entry.get("sha256"):
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
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise KdedgeError("--runtime ort on cuda needs onnxruntime-gpu (CUDAExecutionProvider); "
                              "pip install onnxruntime-gpu")
        providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
    session = open_session(path, threads=threads, providers=providers)
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
