"""A parser of trtexec's report (stdout+stderr) into a TrtexecReport.

The report is log text whose format changed between TensorRT 7, 8 and 10. The parser therefore reads
it line by line, takes only the lines it recognises and ignores all others: a TensorRT that adds or
renames lines gives missing fields (None), never a crash. An output without timings (a failed build,
a crash) is a KdedgeError quoting the error trtexec printed last.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator

from kdedge.bench.trtexec import TimeStats, TrtexecReport
from kdedge.errors import KdedgeError

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
