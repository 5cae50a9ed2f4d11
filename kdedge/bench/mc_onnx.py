"""On-device MC-dropout uncertainty: the exported MC graphs (`kdedge export RUN --mc-dropout N`: model.mc.onnx
and model.mc.int8.onnx, kdedge/export/onnx_mc.py) run by ONNX Runtime on the bench's test split, beside the
torch MC figures, with the MC graph's latency at batch 1 against one deterministic pass of the plain export
of the same precision (timed interleaved).

Each graph draws its own masks (ONNX Runtime seeds its random ops per session), so the MUPE of a student's
exported MC graph against the teacher's uses independent masks, as seed 000 defines MUPE. The TensorRT form
(model.mc.int8-trt.onnx) is not benched: trtexec on a Jetson (`--host`) builds engines from the formats
kdedge/bench/jetson.py names, and the MC graph is not among them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kdedge.bench.runtimes import verified_export
from kdedge.bench.timing import time_interleaved
from kdedge.export.ort_session import open_session
from kdedge.markdown import markdown_table
from kdedge.uncertainty.stats import mc_metrics_from, mupe

# report name -> (MC format, the deterministic format it is timed against)
MC_RUNTIMES = {"ort-mc": ("onnx-mc", "onnx"), "ort-mc-int8": ("onnx-mc-int8", "onnx-int8")}
OUTPUTS = ("probs", "entropy", "variance")
NOT_WIRED = ("TensorRT (--device jetson / --host): not measured; trtexec builds engines only from the "
             "onnx-int8-trt export, the MC graph (model.mc.int8-trt.onnx) is not a row of that table")


def _mc_outputs(session, images: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    parts = [session.run(list(OUTPUTS), {"images": images[i:i + batch]}) for i in range(0, len(images), batch)]
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(OUTPUTS)}


def exported_uncertainty(run_root: Path, exports: dict[str, Any], stages: list[str], images: np.ndarray,
                         labels: torch.Tensor, *, threads: int | None, batch: int, rounds: int, runs: int,
                         log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """{runtime, models: {stage: {ort-mc: metrics + latency, ...}}, mupe: {runtime: {student: value}}, note}
    for every benched model with an MC export; {"skipped": why} when none has one."""
    models: dict[str, dict[str, Any]] = {}
    confidence: dict[str, dict[str, torch.Tensor]] = {}
    for stage in stages:
        for name, (fmt, plain) in MC_RUNTIMES.items():
            record = exports.get(stage, {}).get(fmt)
            if record is None:
                continue
            session = open_session(verified_export(run_root, exports, stage, fmt), threads=threads)
            out = _mc_outputs(session, images, batch)
            probs = torch.from_numpy(out["probs"]).double()
            per_sample = {"confidence": probs.max(1).values, "entropy": torch.from_numpy(out["entropy"]),
                          "variance": torch.from_numpy(out["variance"])}
            entry = {**mc_metrics_from(probs, labels, per_sample), "samples": record.get("mc_samples"),
                     "format": fmt, "file": record.get("file")}
            entry["latency"] = _latency(run_root, exports, stage, plain, session, images, threads, rounds, runs)
            models.setdefault(stage, {})[name] = entry
            confidence.setdefault(name, {})[stage] = per_sample["confidence"]
            log(f"[cyan]MC dropout[/] {stage} {name}: {entry['samples']} samples in the graph, accuracy "
                f"{entry['accuracy']:.4f}, ECE {entry['ece']:.4f}, {entry['latency'].get('mc_over_deterministic', 0):.2f}× "
                "one deterministic pass")
    if not models:
        return {"skipped": "no MC export; `kdedge export RUN --mc-dropout N` makes one for models with dropout",
                "tensorrt": NOT_WIRED}
    result: dict[str, Any] = {"runtime": "onnxruntime CPUExecutionProvider", "models": models,
                              "masks": "independent (each graph draws its own)", "tensorrt": NOT_WIRED}
    mupes = {name: {s: mupe(conf["teacher"], c) for s, c in conf.items() if s != "teacher"}
             for name, conf in confidence.items() if "teacher" in conf and len(conf) > 1}
    if mupes:
        result["mupe"] = mupes
    return result


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
    if "models" not in dev:
        return []
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
            ratio = (f"{lat['mc_over_deterministic']:.2f}× {lat['deterministic_format']}" if "mc_over_deterministic" in lat
                     else f"- (no {lat['deterministic_format']} export)")
            rows.append([stage, name, str(m["samples"]), f"{m['accuracy']:.4f}", f"{m['ece']:.4f}",
                         f"{m['mean_confidence']:.4f}", f"{m['mean_entropy']:.4f}", f"{m['mean_variance']:.2e}",
                         f"{lat['mc']['median_ms']:.3f}", ratio])
    lines = ["## MC dropout on the device (the exported MC graph, ONNX Runtime CPU)", "",
             markdown_table(["model", "runtime", "N", "MC accuracy", "MC ECE", "mean confidence", "mean entropy",
                             "mean variance", "ms (batch 1)", "× one deterministic pass"], rows), "",
             f"Masks: {dev['masks']}; torch rows from the section above. {dev['tensorrt']}.", ""]
    for name, values in (dev.get("mupe") or {}).items():
        lines += [f"MUPE against the teacher ({name}): " + ", ".join(f"{s} {v:.5f}" for s, v in values.items()), ""]
    return lines
