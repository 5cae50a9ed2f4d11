"""What `kdedge bench` adds to its measurements so that a person can decide from the report: which file
was measured (SHA-256, export settings, whether an INT8 export failed its parity gate and was kept by
--allow-drop), which timings are unstable, whether KD beat its baseline beyond noise, whether
temperature scaling made test calibration worse, and the library versions of the runtimes used."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.bench.kd_gain import paired_bootstrap
from kdedge.bench.timing import stability_flags
from kdedge.io import sha256_file

# the KD comparison uses fp32 predictions: the first of these both models ran on
KD_RUNTIMES = ("torch", "ort", "openvino")
# export-entry fields left out of the report's copy: said elsewhere in it (file, size, versions) or noise
EXPORT_OMIT = ("file", "bytes", "versions", "exported", "export_time_s")


def file_record(run_root: Path, path: Path, export: dict[str, Any] | None) -> dict[str, Any]:
    """The measured file (relative to the run when inside it) with its SHA-256, and how it was exported."""
    try:
        shown = Path(path).resolve().relative_to(Path(run_root).resolve()).as_posix()
    except ValueError:
        shown = str(path)
    out: dict[str, Any] = {"file": shown, "sha256": sha256_file(path)}
    if export is not None:
        # every other field the export recorded (settings, parity, gate failures, layers kept in fp32, ...)
        out["export"] = {k: v for k, v in export.items() if k not in EXPORT_OMIT}
    return out


def flag_timings(models: dict[str, Any]) -> list[str]:
    """Mark each model x runtime whose timings are unstable (`timing_flags`); the flagged, as lines."""
    flagged = []
    for stage, info in models.items():
        for runtime, r in info["runtimes"].items():
            flags = stability_flags({k: v for k, v in r.items() if k.startswith("batch") and isinstance(v, dict)})
            r["timing_flags"] = flags
            flagged += [f"{stage} on {runtime}: {f}" for f in flags]
    return flagged


def kd_vs_baseline(correct: dict[tuple[str, str], np.ndarray]) -> dict[str, Any] | None:
    """The student against its baseline on the same images and the same fp32 runtime, or None."""
    for runtime in KD_RUNTIMES:
        if ("student", runtime) in correct and ("baseline", runtime) in correct:
            result = paired_bootstrap(correct[("student", runtime)], correct[("baseline", runtime)])
            return {"student": "student", "baseline": "baseline", "runtime": runtime, **result}
    return None


def temperature_check(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration stage's test ECE before and after T*, and whether T* made it worse."""
    record = (manifest.get("stages") or {}).get("calibration") or {}
    before, after = record.get("test_ece_before"), record.get("test_ece_after")
    if before is None or after is None:
        return None
    return {"test_ece_before": before, "test_ece_after": after, "worse": after > before}


def runtime_versions(names: list[str]) -> dict[str, str]:
    """Versions of the runtime packages beyond kdedge.run.package_versions (OpenVINO) that were used."""
    out = {}
    if any(n.startswith("openvino") for n in names):
        try:
            out["openvino"] = metadata.version("openvino")
        except metadata.PackageNotFoundError:
            out["openvino"] = "not installed"
    return out


def tiled(images: np.ndarray, batch: int) -> np.ndarray:
    """`batch` images (repeating the split when it is smaller), contiguous: a timing of batch N is of N."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch] if reps > 1 else images[:batch])
