"""trtexec: the argument list that builds and times a TensorRT engine, and the report it gives
(TimeStats, TrtexecReport; kdedge/bench/trtexec_parse.py reads it from trtexec's output).

trtexec is TensorRT's own benchmark and ships with it on every platform (JetPack puts it in
/usr/src/tensorrt/bin), so timing the Q/DQ ONNX on a Jetson needs no kdedge code on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Mapping, Sequence

from kdedge.errors import KdedgeError

JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # JetPack installs it here, not on PATH


# ---------------------------------------------------------------------------------------------------
# the command


def trtexec_command(onnx_path: str | PathLike[str], engine_path: str | PathLike[str], *,
                    shapes: Mapping[str, Sequence[int]] | None, int8: bool = True, fp16: bool = True,
                    iterations: int | None = None, duration_s: int | None = None, warmup_ms: int | None = None,
                    extra_args: Sequence[str] = (), trtexec: str = "trtexec") -> list[str]:
    """argv that builds an engine from the (Q/DQ) ONNX, saves it, then times it.

    shapes: input name -> full shape, e.g. {"input": (32, 1, 28, 28)}; kdedge exports have a dynamic
    batch, and --shapes makes trtexec build its optimisation profile for exactly that shape and time it
    there. iterations alone means exactly that many timed queries (--duration=0: trtexec otherwise runs
    "at least N iterations and at least 3 s"). An argument list only: each flag is one element, so paths
    with spaces need no quoting (ssh.run quotes them for a remote shell).
    """
    args = [trtexec, f"--onnx={_path(onnx_path, 'onnx_path')}", f"--saveEngine={_path(engine_path, 'engine_path')}"]
    if int8:
        args.append("--int8")  # Q/DQ scales decide what runs in INT8; no calibrator is used
    if fp16:
        args.append("--fp16")  # layers without Q/DQ may run in FP16 rather than FP32
    return args + _timing_args(shapes, iterations, duration_s, warmup_ms, extra_args)


def trtexec_load_command(engine_path: str | PathLike[str], *, shapes: Mapping[str, Sequence[int]] | None,
                         iterations: int | None = None, duration_s: int | None = None, warmup_ms: int | None = None,
                         extra_args: Sequence[str] = (), trtexec: str = "trtexec") -> list[str]:
    """argv that times an engine built before (by trtexec_command) at another input shape, without
    rebuilding it: the shape must lie inside the engine's optimisation profile."""
    args = [trtexec, f"--loadEngine={_path(engine_path, 'engine_path')}"]
    return args + _timing_args(shapes, iterations, duration_s, warmup_ms, extra_args)


def batch_profile_args(input_name: str, image_shape: Sequence[int], max_batch: int) -> list[str]:
    """extra_args for trtexec_command: one optimisation profile for batch 1..max_batch (optimum max_batch),
    so that one engine serves batch-1 latency, batch-N throughput and accuracy batches. trtexec builds
    from these and times at --shapes."""
    batch = _positive(max_batch, "max_batch")
    return [f"--{kind}Shapes=" + _shapes_spec({input_name: (b, *image_shape)})
            for kind, b in (("min", 1), ("opt", batch), ("max", batch))]


def _timing_args(shapes: Mapping[str, Sequence[int]] | None, iterations: int | None, duration_s: int | None,
                 warmup_ms: int | None, extra_args: Sequence[str]) -> list[str]:
    args: list[str] = []
    if shapes is not None:
        args.append("--shapes=" + _shapes_spec(shapes))
    if iterations is not None:
        args.append(f"--iterations={_positive(iterations, 'iterations')}")
        if duration_s is None:
            duration_s = 0
    if duration_s is not None:
        args.append(f"--duration={_non_negative(duration_s, 'duration_s')}")
    if warmup_ms is not None:
        args.append(f"--warmUp={_non_negative(warmup_ms, 'warmup_ms')}")
    for arg in extra_args:
        if not isinstance(arg, str) or not arg.startswith("--"):
            raise KdedgeError(f"trtexec extra argument {arg!r}: must be one '--flag' or '--flag=value' string")
        args.append(arg)
    return args


def _path(path: str | PathLike[str], what: str) -> str:
    text = str(path)
    if not text:
        raise KdedgeError(f"trtexec {what}: empty path")
    return text


def _shapes_spec(shapes: Mapping[str, Sequence[int]]) -> str:
    if not shapes:
        raise KdedgeError("trtexec shapes: give at least one input, e.g. {'input': (1, 1, 28, 28)}, or None")
    parts = []
    for name, dims in shapes.items():
        # ',' separates inputs and ':' name from dims in trtexec's --shapes syntax
        if not isinstance(name, str) or not name or any(c in name for c in ",: \t"):
            raise KdedgeError(f"trtexec shapes: input name {name!r} is empty or contains ',', ':' or spaces")
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise KdedgeError(f"trtexec shapes: {name}={list(dims)}: every dimension must be a positive integer")
        parts.append(f"{name}:{'x'.join(str(d) for d in dims)}")
    return ",".join(parts)


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KdedgeError(f"trtexec {what}={value!r}: must be a positive integer")
    return value


def _non_negative(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KdedgeError(f"trtexec {what}={value!r}: must be an integer >= 0")
    return value


# ---------------------------------------------------------------------------------------------------
# the report


@dataclass(frozen=True)
class TimeStats:
    """One timing line of the summary, in milliseconds; what trtexec did not print is None."""

    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    median_ms: float | None = None
    percentiles_ms: Mapping[float, float] = field(default_factory=dict)  # 90.0 -> ms (TensorRT >= 8.5: 90/95/99)

    def percentile(self, p: float) -> float | None:
        return self.percentiles_ms.get(float(p))

    @property
    def p90_ms(self) -> float | None:
        return self.percentile(90)

    @property
    def p95_ms(self) -> float | None:
        return self.percentile(95)

    @property
    def p99_ms(self) -> float | None:
        return self.percentile(99)

    def to_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"min_ms": self.min_ms, "max_ms": self.max_ms, "mean_ms": self.mean_ms,
                                        "median_ms": self.median_ms}
        out.update({f"p{p:g}_ms": v for p, v in sorted(self.percentiles_ms.items())})
        return out


@dataclass(frozen=True)
class TrtexecReport:
    """What one trtexec run reported. Times are those of one inference of a whole batch (`batch` images)."""

    tensorrt_version: str | None = None      # "10.3.0" ("TensorRT version:" line, else the [TensorRT v100300] tag)
    status: str | None = None                # RUNNING | PASSED | FAILED: the last "&&&&" line
    command: str | None = None               # the command line trtexec echoed
    device_name: str | None = None           # "Orin", "NVIDIA GeForce RTX 2080"
    compute_capability: str | None = None    # "8.7"
    precision: tuple[str, ...] = ()          # build flags, e.g. ("FP32", "FP16", "INT8")
    int8: bool | None = None                 # INT8 allowed in the build; None: a loaded engine, build unknown
    loaded_engine: str | None = None         # --loadEngine file, when the engine was not built by this run
    batch: int | None = None                 # implicit batch, or the leading dim shared by all inference inputs
    explicit_batch: bool | None = None
    inference_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    build_shapes: Mapping[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)  # name -> (min, opt, max)
    iterations: int | None = None            # as configured (--iterations)
    duration_s: float | None = None          # as configured (--duration)
    warmup_ms: float | None = None           # as configured (--warmUp)
    warmup_queries: int | None = None        # as run
    queries: int | None = None               # timed queries, as run
    throughput_qps: float | None = None
    latency: TimeStats | None = None         # H2D + GPU compute + D2H of one query
    end_to_end: TimeStats | None = None      # "End-to-End Host Latency" (TensorRT 7 to 8.4)
    enqueue: TimeStats | None = None
    h2d: TimeStats | None = None
    gpu_compute: TimeStats | None = None
    d2h: TimeStats | None = None
    walltime_s: float | None = None          # Total Host Walltime
    gpu_compute_total_s: float | None = None
    gpu_compute_cv_percent: float | None = None  # printed when trtexec finds GPU compute time unstable
    warnings: tuple[str, ...] = ()           # the summary's "* ..." warnings
    errors: tuple[str, ...] = ()             # every [E] line

    @property
    def images_per_s(self) -> float | None:
        """Throughput in images: with an implicit batch (--batch=N, TensorRT <= 9) trtexec already counts
        each image as a query; with an explicit batch a query is a whole batch."""
        if self.throughput_qps is None:
            return None
        if self.explicit_batch is False:
            return self.throughput_qps
        return self.throughput_qps * self.batch if self.batch is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for a manifest): plain types only."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, TimeStats):
                value = value.to_dict()
            elif name == "inference_shapes":
                value = {k: list(v) for k, v in value.items()}
            elif name == "build_shapes":
                value = {k: [list(s) for s in v] for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        out["images_per_s"] = self.images_per_s
        return out
