"""On-device MC-dropout uncertainty: the exported MC graphs (`kdedge export RUN --mc-dropout N`: model.mc.onnx,
model.mc.int8.onnx and the TensorRT form model.mc.int8-trt.onnx, kdedge/export/onnx_mc.py) run on the bench's
test split, beside the torch MC figures, each with its latency at batch 1 against one deterministic pass of
the plain export of the same precision.

* ONNX Runtime (every device): both ONNX graphs, timed interleaved here.
* TensorRT (`--device jetson`, on the Jetson or over `--host`): trtexec builds the TensorRT form into an
  engine on the device (kdedge/bench/jetson.py, precision `mc-int8`) and times it; the engine then runs
  the test split through TensorRT's Python API for the statistics. Its latency ratio is trtexec's median
  against the plain onnx-int8-trt engine's, both at batch 1.

Each graph draws its own masks (ONNX Runtime seeds its random ops per session; TensorRT ignores the seed
attribute), so the MUPE of a student's exported MC graph against the teacher's uses independent masks,
as seed 000 defines MUPE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kdedge.bench.jetson import MC_PRECISION, TRT_DIR
from kdedge.bench.runtimes import verified_export
from kdedge.bench.timing import time_interleaved
from kdedge.errors import KdedgeError
from kdedge.export.ort_session import open_session
from kdedge.markdown import markdown_table
from kdedge.uncertainty.stats import mc_metrics_from, mupe

# report name -> (MC format, the deterministic format it is timed against)
MC_RUNTIMES = {"ort-mc": ("onnx-mc", "onnx"), "ort-mc-int8": ("onnx-mc-int8", "onnx-int8")}
TRT_MC = "trt-mc-int8"          # the report name of the TensorRT MC engine
TRT_MC_FORMAT = "onnx-mc-int8-trt"
OUTPUTS = ("probs", "entropy", "variance")

RunAll = Callable[[np.ndarray], dict[str, np.ndarray]]


def _default_engine_runner(engine: Path) -> RunAll:
    from kdedge.export.tensorrt_engine import EngineRunner

    return EngineRunner(engine.read_bytes()).run_all


def _batched_outputs(run_all: RunAll, images: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    parts = [run_all(np.ascontiguousarray(images[i:i + batch])) for i in range(0, len(images), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in OUTPUTS}


def _ort_runner(session) -> RunAll:
    return lambda x: dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"images": x}), strict=True))


def _entry(out: dict[str, np.ndarray], labels: torch.Tensor, samples: Any, fmt: str,
           file: Any) -> tuple[dict[str, Any], torch.Tensor]:
    probs = torch.from_numpy(out["probs"]).double()
    per_sample = {"confidence": probs.max(1).values, "entropy": torch.from_numpy(out["entropy"]),
                  "variance": torch.from_numpy(out["variance"])}
    entry = {**mc_metrics_from(probs, labels, per_sample), "samples": samples, "format": fmt, "file": file}
    return entry, per_sample["confidence"]


def exported_uncertainty(run_root: Path, exports: dict[str, Any], stages: list[str], images: np.ndarray,
                         labels: torch.Tensor, *, threads: int | None, batch: int, rounds: int, runs: int,
                         trtexec: dict[str, Any] | None = None, bench_dir: Path | None = None,
                         engine_runner: Callable[[Path], RunAll] = _default_engine_runner,
                         log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """{runtime, models: {stage: {ort-mc: metrics + latency, ...}}, mupe: {runtime: {student: value}}, tensorrt}
    for every benched model with an MC export; {"skipped": why} when none has one. `trtexec` is the Jetson
    bench's trtexec section (None elsewhere) and `bench_dir` the folder its engines were built in;
    `engine_runner` opens an engine (TensorRT's Python API; a test passes a stand-in)."""
    models: dict[str, dict[str, Any]] = {}
    confidence: dict[str, dict[str, torch.Tensor]] = {}
    for stage in stages:
        for name, (fmt, plain) in MC_RUNTIMES.items():
            record = exports.get(stage, {}).get(fmt)
            if record is None:
                continue
            session = open_session(verified_export(run_root, exports, stage, fmt), threads=threads)
            entry, conf = _entry(_batched_outputs(_ort_runner(session), images, batch), labels,
                                 record.get("mc_samples"), fmt, record.get("file"))
            entry["latency"] = _latency(run_root, exports, stage, plain, session, images, threads, rounds, runs)
            models.setdefault(stage, {})[name] = entry
            confidence.setdefault(name, {})[stage] = conf
            _log_entry(log, stage, name, entry)
    tensorrt = _tensorrt_mc(exports, stages, images, labels, batch, trtexec, bench_dir, engine_runner, log)
    for stage, entry in tensorrt.pop("entries", {}).items():
        models.setdefault(stage, {})[TRT_MC] = entry
        confidence.setdefault(TRT_MC, {})[stage] = entry.pop("_confidence")
    if not models:
        return {"skipped": "no MC export; `kdedge export RUN --mc-dropout N` makes one for models with dropout",
                "tensorrt": tensorrt}
    result: dict[str, Any] = {"runtime": "onnxruntime CPUExecutionProvider" + (", TensorRT" if TRT_MC in confidence
                                                                              else ""),
                              "models": models, "masks": "independent (each graph draws its own)",
                              "tensorrt": tensorrt}
    mupes = {name: {s: mupe(conf["teacher"], c) for s, c in conf.items() if s != "teacher"}
             for name, conf in confidence.items() if "teacher" in conf and len(conf) > 1}
    if mupes:
        result["mupe"] = mupes
    return result


def _log_entry(log: Callable[[str], None], stage: str, name: str, entry: dict[str, Any]) -> None:
    ratio = entry["latency"].get("mc_over_deterministic")
    log(f"[cyan]MC dropout[/] {stage} {name}: {entry['samples']} samples in the graph, accuracy "
        f"{entry['accuracy']:.4f}, ECE {entry['ece']:.4f}"
        + (f", {ratio:.2f}× one deterministic pass" if ratio is not None else ""))


def _tensorrt_mc(exports: dict[str, Any], stages: list[str], images: np.ndarray, labels: torch.Tensor, batch: int,
                 trtexec: dict[str, Any] | None, bench_dir: Path | None, engine_runner: Callable[[Path], RunAll],
                 log: Callable[[str], None]) -> dict[str, Any]:
    """{measured, note, entries: {stage: metrics + trtexec latency}, errors: {stage: why}}: the TensorRT MC
    engines trtexec built on a Jetson, run on the test split."""
    exported = [s for s in stages if TRT_MC_FORMAT in exports.get(s, {})]
    if trtexec is None:
        return {"measured": False, "note": "TensorRT MC engines are built and measured by `kdedge bench RUN "
                "--device jetson` (on the Jetson, or from here with --host user@addr)"}
    if not trtexec.get("available"):
        return {"measured": False, "note": f"TensorRT not measured: {trtexec.get('reason', 'trtexec unavailable')}"}
    if not exported:
        return {"measured": False, "note": f"no {TRT_MC_FORMAT} export; `kdedge export RUN --int8 --mc-dropout N` "
                                           "makes the TensorRT form of the MC graph"}
    entries: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for stage in exported:
        by_precision = (trtexec.get("models") or {}).get(stage) or {}
        built = by_precision.get(MC_PRECISION) or {}
        if bench_dir is None:
            errors[stage] = "no bench folder given to find trtexec's engines in"
            continue
        if not built.get("engine"):
            errors[stage] = built.get("error") or "trtexec built no MC engine"
            continue
        record = exports[stage][TRT_MC_FORMAT]
        try:
            out = _batched_outputs(engine_runner(bench_dir / TRT_DIR / built["engine"]), images, batch)
            bad = [name for name, values in out.items() if not np.isfinite(values).all()]
            if bad:
                raise KdedgeError(f"the engine's {', '.join(bad)} hold NaN or infinite values")
            entry, conf = _entry(out, labels, record.get("mc_samples"), TRT_MC_FORMAT, record.get("file"))
        except Exception as exc:  # noqa: BLE001 - one engine failing (CUDA, TensorRT, its outputs) is one line
            why = exc.message if isinstance(exc, KdedgeError) else f"{type(exc).__name__}: {exc}"
            errors[stage] = why
            log(f"[yellow]MC dropout[/] {stage} {TRT_MC}: {why}")
            continue
        entry["latency"] = _trtexec_latency(built, by_precision.get("int8") or {})
        entry["_confidence"] = conf
        entries[stage] = entry
        _log_entry(log, stage, TRT_MC, entry)
    note = (f"TensorRT: engines built by trtexec on the device from {TRT_MC_FORMAT}; latency is trtexec's "
            "median at batch 1 against the onnx-int8-trt engine's")
    return {"measured": bool(entries), "note": note, "entries": entries, **({"errors": errors} if errors else {})}


def _trtexec_latency(mc: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """trtexec's batch-1 medians of the MC engine and of the plain INT8 engine, in the report's shape."""
    def median(result: dict[str, Any]) -> float | None:
        value = ((result.get("batch1") or {}).get("latency") or {}).get("median_ms")
        return float(value) if isinstance(value, (int, float)) else None

    out: dict[str, Any] = {"batch": 1, "deterministic_format": "onnx-int8-trt", "source": "trtexec",
                           "mc": {"median_ms": median(mc)}}
    det = median(plain)
    if det is not None:
        out["deterministic"] = {"median_ms": det}
        if out["mc"]["median_ms"] is not None and det > 0:
            out["mc_over_deterministic"] = out["mc"]["median_ms"] / det
    return out


def _latency(run_root: Path, exports: dict[str, Any], stage: str, plain: str, session, images: np.ndarray,
             threads: int | None, rounds: int, runs: int) -> dict[str, Any]:
    """Batch 1: the MC graph and (when exported) one deterministic pass of `plain`, interleaved."""
    x = np.ascontiguousarray(images[:1])
    calls: dict[str, Callable[[], object]] = {"mc": lambda: session.run(None, {"images": x})}
    if plain in exports.get(stage, {}):
        det = open_session(verified_export(run_root, exports, stage, plain), threads=threads)
        calls["deterministic"] = lambda: det.run(None, {"images": x})
    timings = time_interleaved(calls, batch=1, rounds=rounds, runs=runs, warmup=max(5, runs // 2))
    out: dict[str, Any] = {"batch": 1, "deterministic_format": plain, **{k: t.to_dict() for k, t in timings.items()}}
    if "deterministic" in timings:
        out["mc_over_deterministic"] = timings["mc"].median_ms / timings["deterministic"].median_ms
    return out


def report_lines(report: dict[str, Any]) -> list[str]:
    """report.md's section: the exported MC graphs beside torch's MC figures (`uncertainty`)."""
    dev = report.get("uncertainty_exported") or {}
    trt = dev.get("tensorrt") or {}
    if isinstance(trt, str):  # a report from an older kdedge (e.g. fetched from a device over --host)
        trt = {"note": trt}
    trt_errors = [f"TensorRT MC engine of {stage}: not measured ({why})." for stage, why in
                  (trt.get("errors") or {}).items()]
    if "models" not in dev:
        return ["## MC dropout on the device", "", *[line for e in trt_errors for line in (e, "")]] if trt_errors else []
    torch_mc = (report.get("uncertainty") or {}).get("models", {})
    rows = []
    for stage, by_runtime in dev["models"].items():
        t = torch_mc.get(stage) or {}
        if t.get("applicable"):
            rows.append([stage, "torch", str((report.get("uncertainty") or {}).get("samples", "")),
                         f"{t['accuracy']:.4f}", f"{t['ece']:.4f}", f"{t['mean_confidence']:.4f}",
                         f"{t['mean_entropy']:.4f}", f"{t['mean_variance']:.2e}", "", ""])
        for name, m in by_runtime.items():
            lat = m["latency"]
            ms = lat["mc"].get("median_ms")
            ratio = (f"{lat['mc_over_deterministic']:.2f}× {lat['deterministic_format']}" if "mc_over_deterministic" in lat
                     else f"- (no {lat['deterministic_format']} " + ("time)" if lat.get("source") == "trtexec"
                                                                       else "export)"))
            rows.append([stage, name, str(m["samples"]), f"{m['accuracy']:.4f}", f"{m['ece']:.4f}",
                         f"{m['mean_confidence']:.4f}", f"{m['mean_entropy']:.4f}", f"{m['mean_variance']:.2e}",
                         "-" if ms is None else f"{ms:.3f}", ratio])
    lines = ["## MC dropout on the device (the exported MC graphs)", "",
             markdown_table(["model", "runtime", "N", "MC accuracy", "MC ECE", "mean confidence", "mean entropy",
                             "mean variance", "ms (batch 1)", "× one deterministic pass"], rows), "",
             f"Masks: {dev['masks']}; torch rows from the section above. {trt.get('note', '')}.", ""]
    for line in trt_errors:
        lines += [line, ""]
    for name, values in (dev.get("mupe") or {}).items():
        lines += [f"MUPE against the teacher ({name}): " + ", ".join(f"{s} {v:.5f}" for s, v in values.items()), ""]
    return lines
