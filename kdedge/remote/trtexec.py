"""trtexec: the argument list that builds and times a TensorRT engine, and a parser of its report.

trtexec is TensorRT's own benchmark and ships with it on every platform (JetPack puts it in
/usr/src/tensorrt/bin), so timing the Q/DQ ONNX on a Jetson needs no kdedge code on the device. Its
report is log text whose format changed between TensorRT 7, 8 and 10. The parser therefore reads it
line by line, takes only the lines it recognises and ignores all others: a TensorRT that adds or
renames lines gives missing fields (None), never a crash. An output without timings (a failed build,
a crash) is a KdedgeError quoting the error trtexec printed last.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Iterator, Mapping, Sequence

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


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)"
# "[11/23/2026-10:00:00] [I] msg": an optional timestamp (or a wrapper's own prefix) before the level tag
_TAGGED = re.compile(r"^(?:[^\[]*\[[^\]]*\]\s*)*?\[(?P<level>[VIWEF])\]\s?(?P<msg>.*)$")
_HEADER = re.compile(r"&&&&\s+(?P<status>[A-Z]+)\s+TensorRT\.trtexec\s*(?:\[TensorRT v(?P<code>\d+)\])?"
                     r"(?:\s*\[b\d+\])?\s*(?:#\s*(?P<cmd>.*))?$")
_STAT_LINES = {
    "latency": r"(?:Host )?Latency", "end_to_end": r"End-to-End Host Latency", "enqueue": r"Enqueue Time",
    "h2d": r"H2D Latency", "gpu_compute": r"GPU Compute Time", "d2h": r"D2H Latency",
}
_STAT_LINE = re.compile(r"^(?P<key>" + "|".join(f"(?P<{k}>{v})" for k, v in _STAT_LINES.items())
                        + r")\s*:\s*(?P<body>.*)$")
_STAT_ITEM = re.compile(rf"\b(?P<name>min|max|mean|median)\s*=?\s*(?P<v>{_NUM})\s*ms\b", re.I)
_PERCENTILE_ITEM = re.compile(rf"percentile\(\s*(?P<p>{_NUM})\s*%\s*\)\s*=?\s*(?P<v>{_NUM})\s*ms\b", re.I)
# TensorRT 7: a block header ("Host Latency", "Enqueue Time", "GPU Compute"), then "min: 1.2 ms (end to end 2.3 ms)"
_LEGACY_BLOCKS = {"host latency": "latency", "enqueue time": "enqueue", "gpu compute": "gpu_compute"}
_LEGACY_ITEM = re.compile(rf"^(?P<name>min|max|mean|median)\s*:\s*(?P<v>{_NUM})\s*ms"
                          rf"(?:\s*\(end to end\s*(?P<e2e>{_NUM})\s*ms\))?", re.I)
_LEGACY_PERCENTILE = re.compile(rf"^percentile\s*:\s*(?P<v>{_NUM})\s*ms\s+at\s+(?P<p>{_NUM})\s*%"
                                rf"(?:\s*\(end to end\s*(?P<e2e>{_NUM})\s*ms)?", re.I)
_SIMPLE = {  # message regex -> (field, converter)
    re.compile(rf"^Throughput\s*:\s*(?P<v>{_NUM})\s*qps", re.I): ("throughput_qps", float),
    re.compile(rf"^(?:Total Host Walltime|walltime)\s*:\s*(?P<v>{_NUM})\s*s\b", re.I): ("walltime_s", float),
    re.compile(rf"^(?:Total GPU Compute Time|total compute time)\s*:\s*(?P<v>{_NUM})\s*s\b", re.I):
        ("gpu_compute_total_s", float),
    re.compile(r"^TensorRT version\s*:\s*(?P<v>\d+(?:\.\d+)+)"): ("tensorrt_version", str),
    re.compile(r"^Selected Device\s*:\s*(?P<v>.+?)\s*$"): ("device_name", str),
    re.compile(r"^Compute Capability\s*:\s*(?P<v>\d+\.\d+)"): ("compute_capability", str),
    re.compile(r"^Iterations\s*:\s*(?P<v>\d+)"): ("iterations", int),
    re.compile(r"^Timing trace has\s+(?P<v>\d+)\s+queries"): ("queries", int),
    re.compile(r"^Warmup completed\s+(?P<v>\d+)\s+queries"): ("warmup_queries", int),
    re.compile(rf"coefficient of variance\s*=\s*(?P<v>{_NUM})\s*%"): ("gpu_compute_cv_percent", float),
}
_DURATION = re.compile(rf"^Duration\s*:\s*(?P<d>{_NUM})\s*s(?:\s*\(\+\s*(?P<w>{_NUM})\s*ms warm ?up\))?", re.I)
_LEGACY_WARMUP = re.compile(rf"^Iterations\s*:\s*\d+\s*\((?P<w>{_NUM})\s*ms warm ?up\)", re.I)
_PRECISION = re.compile(r"^Precision\s*:\s*(?P<v>[A-Za-z0-9+]+)")
_LOAD_ENGINE = re.compile(r"^Load engine\s*:\s*(?P<v>.*?)\s*$")
_BATCH = re.compile(r"^Batch\s*:\s*(?P<v>\S+)")
_INFER_SHAPE = re.compile(r"^Input inference shapes?\s*:\s*(?P<v>.+?)\s*$")
_BUILD_SHAPE = re.compile(r"^Input build shapes?(?:\s*\(profile\s*\d+\))?\s*:\s*(?P<v>.+?)\s*$")
_SUMMARY = re.compile(r"^=== Performance summary ===")


def parse_trtexec(text: str, *, source: str = "trtexec output") -> TrtexecReport:
    """The report in trtexec's stdout+stderr. No timings in it: a one-line KdedgeError quoting the
    last error line (and the first, which is usually the cause) that trtexec printed."""
    fields: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    e2e_legacy: dict[str, Any] = {}
    precision: tuple[str, ...] = ()
    errors: list[str] = []
    warnings: list[str] = []
    inference_shapes: dict[str, tuple[int, ...]] = {}
    build_shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    version_code: int | None = None
    legacy_block: str | None = None
    in_summary = False
    last_line = ""

    for level, msg in _messages(text):
        last_line = msg or last_line
        if level == "E":
            errors.append(msg)
            continue
        if level == "W" and in_summary and msg.startswith("* "):
            warnings.append(msg[2:].strip())
        if (m := _HEADER.search(msg)) is not None:
            fields["status"] = m["status"]
            if m["code"]:
                version_code = int(m["code"])
            if m["cmd"]:
                fields["command"] = m["cmd"].strip()
            continue
        if _SUMMARY.match(msg):  # a second summary (two runs in one text) replaces the first
            in_summary, stats, e2e_legacy, warnings = True, {}, {}, []
            for key in ("throughput_qps", "walltime_s", "gpu_compute_total_s", "gpu_compute_cv_percent"):
                fields.pop(key, None)
            continue
        if (m := _STAT_LINE.match(msg)) is not None:
            key = next(k for k in _STAT_LINES if m[k] is not None)
            if items := _stat_items(m["body"]):  # a line with no readable number does not erase a good one
                stats[key] = items
                legacy_block = None
            continue
        if msg.lower() in _LEGACY_BLOCKS:
            legacy_block = _LEGACY_BLOCKS[msg.lower()]
            continue
        if legacy_block is not None and _legacy_item(msg, stats.setdefault(legacy_block, {}),
                                                      e2e_legacy if legacy_block == "latency" else None):
            continue
        if (m := _LEGACY_WARMUP.match(msg)) is not None:  # TensorRT 7: "Iterations: 10 (200 ms warm up)"
            fields["warmup_ms"] = _float(m["w"])
        if _simple(msg, fields):
            continue
        if (m := _DURATION.match(msg)) is not None:
            fields["duration_s"] = _float(m["d"])
            if m["w"] is not None:
                fields["warmup_ms"] = _float(m["w"])
        elif (m := _PRECISION.match(msg)) is not None:
            precision = tuple(p.upper() for p in m["v"].split("+") if p)
        elif (m := _LOAD_ENGINE.match(msg)) is not None:
            fields["loaded_engine"] = m["v"] or None
        elif (m := _BATCH.match(msg)) is not None:
            value = m["v"]
            number = value.isascii() and value.isdigit()
            fields["explicit_batch"] = not number
            fields["batch"] = int(value) if number and int(value) > 0 else None
        elif (m := _INFER_SHAPE.match(msg)) is not None:
            inference_shapes.update(_shape_specs(m["v"], profile=False))
        elif (m := _BUILD_SHAPE.match(msg)) is not None:
            build_shapes.update(_shape_specs(m["v"], profile=True))

    if e2e_legacy:
        stats.setdefault("end_to_end", e2e_legacy)
    timings = {k: _stats(v) for k, v in stats.items() if v}
    if fields.get("throughput_qps") is None and not ({"latency", "gpu_compute"} & timings.keys()):
        raise KdedgeError(_no_summary_message(source, fields, version_code, errors, last_line))

    if "tensorrt_version" not in fields and version_code is not None:
        fields["tensorrt_version"] = _version_from_code(version_code)
    if fields.get("batch") is None and inference_shapes:
        leading = {dims[0] for dims in inference_shapes.values() if dims}
        if len(leading) == 1:
            fields["batch"] = leading.pop()
    return TrtexecReport(
        **fields, **timings, precision=precision, int8=_int8(precision, fields), inference_shapes=inference_shapes,
        build_shapes=build_shapes, warnings=tuple(warnings), errors=tuple(errors))


def _messages(text: str) -> Iterator[tuple[str | None, str]]:
    """(level, message) per non-empty line; level None for untagged lines (e.g. "&&&& PASSED ...")."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _TAGGED.match(line)
        if m is None:
            yield None, line
            continue
        msg = m["msg"].strip()
        yield m["level"], msg


def _stat_items(body: str) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for m in _STAT_ITEM.finditer(body):
        items.setdefault(m["name"].lower(), _float(m["v"]))
    percentiles = {}
    for m in _PERCENTILE_ITEM.finditer(body):
        p, v = _float(m["p"]), _float(m["v"])
        if p is not None and v is not None:
            percentiles[p] = v
    if percentiles:
        items["percentiles"] = percentiles
    return items


def _legacy_item(msg: str, block: dict[str, Any], e2e: dict[str, Any] | None) -> bool:
    if (m := _LEGACY_ITEM.match(msg)) is not None:
        block[m["name"].lower()] = _float(m["v"])
        if e2e is not None and m["e2e"] is not None:
            e2e[m["name"].lower()] = _float(m["e2e"])
        return True
    if (m := _LEGACY_PERCENTILE.match(msg)) is not None:
        p = _float(m["p"])
        if p is not None:
            block.setdefault("percentiles", {})[p] = _float(m["v"])
            if e2e is not None and m["e2e"] is not None:
                e2e.setdefault("percentiles", {})[p] = _float(m["e2e"])
        return True
    return False


def _stats(items: dict[str, Any]) -> TimeStats:
    percentiles = {p: v for p, v in items.get("percentiles", {}).items() if v is not None}
    return TimeStats(min_ms=items.get("min"), max_ms=items.get("max"), mean_ms=items.get("mean"),
                     median_ms=items.get("median"), percentiles_ms=percentiles)


def _simple(msg: str, fields: dict[str, Any]) -> bool:
    for pattern, (name, convert) in _SIMPLE.items():
        if (m := pattern.search(msg)) is not None:
            value = _float(m["v"]) if convert is float else convert(m["v"])
            fields[name] = value
            return True
    return False


def _float(text: str) -> float | None:
    """A printed number; inf/nan (what trtexec prints for an empty trace) become None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _shape_specs(spec: str, *, profile: bool) -> Iterator[tuple[str, Any]]:
    """"input=1x3x224x224" (inference) or "input=1x3x8x8+4x3x8x8+8x3x8x8" (build: min+opt+max);
    "model" (shapes taken from the model) and anything malformed give nothing."""
    for part in spec.split(","):
        name, sep, dims = part.strip().rpartition("=")
        if not sep or not name.strip():
            continue
        try:
            shapes = tuple(tuple(int(d) for d in s.split("x")) for s in dims.strip().split("+"))
        except ValueError:
            continue
        if profile and len(shapes) == 3:
            yield name.strip(), shapes
        elif not profile and len(shapes) == 1:
            yield name.strip(), shapes[0]


def _version_from_code(code: int) -> str:
    """The [TensorRT vNNNN] tag: 8502 -> 8.5.2 (major*1000 + minor*100 + patch up to TensorRT 8),
    100300 -> 10.3.0 and 101303 -> 10.13.3 (major*10000 + minor*100 + patch from TensorRT 10)."""
    if code >= 10000:
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


def _int8(precision: tuple[str, ...], fields: dict[str, Any]) -> bool | None:
    command = fields.get("command") or ""
    if "INT8" in precision or re.search(r"(?:^|\s)--(?:int8|best)\b", command):
        return True
    if fields.get("loaded_engine"):
        return None  # the build options printed are defaults; the engine's own precision is not in the log
    return False if precision else None


_GENERIC_ERRORS = ("Engine set up failed", "Failed to create engine from model or file.")


def _no_summary_message(source: str, fields: dict[str, Any], code: int | None, errors: list[str],
                        last_line: str) -> str:
    version = fields.get("tensorrt_version") or (_version_from_code(code) if code is not None else None)
    what = ", ".join(x for x in (f"TensorRT {version}" if version else "", fields.get("status", "")) if x)
    head = f"{source}: trtexec printed no performance summary" + (f" ({what})" if what else "")
    if errors:
        message = f"{head}; its last error: {_clip(errors[-1])!r}"
        if len(errors) > 1 and errors[0] != errors[-1]:
            message += f" (first error: {_clip(errors[0])!r})"
    elif last_line:
        message = f"{head} and no error line; its last line: {_clip(last_line)!r}"
    else:
        message = f"{head}: the output is empty"
    return message + "; run the same trtexec command by hand to see its full log"


def _clip(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
