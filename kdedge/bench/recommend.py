"""What to ship: from a bench report and the user's limits, the fastest model x runtime x precision that
meets them, and the runner-up; when none does, the closest one and which limit it misses by how much.

A pure function of the report dict (no I/O, no measuring), so it is tested on hand-made reports.

- Accuracy: at most `max_drop` points below the teacher's fp32 accuracy (torch, else ONNX Runtime,
  else any fp32 runtime of the teacher); without a benchmarked teacher the limit cannot apply (noted).
- ECE (optional): at most `max_ece`. Latency (optional): median of one batch of `budget_batch` images
  at most `budget_ms`. "Fastest" is always the median latency at `budget_batch` (default 1).
- An INT8 model is never recommended over its own fp32 on the same runtime family (ort-int8 vs ort,
  openvino-int8 vs openvino) when that fp32 also meets the limits and is at least as fast: INT8 then
  costs accuracy for nothing. Each such case is named in the notes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PT = 100  # accuracy fractions -> percentage points


@dataclass(frozen=True)
class Limits:
    max_drop: float = 1.0           # points below the teacher's fp32 accuracy
    max_ece: float | None = None
    budget_ms: float | None = None  # per batch of budget_batch images
    budget_batch: int = 1


def recommend(report: dict[str, Any], limits: Limits = Limits()) -> dict[str, Any]:
    label = f"batch{limits.budget_batch}"
    notes: list[str] = []
    reference = _reference(report)
    min_accuracy = None if reference is None else reference["accuracy"] - limits.max_drop / PT
    if reference is None:
        notes.append("no teacher was benchmarked, so --max-drop (accuracy below the teacher's fp32) is not applied")
    candidates = []
    for stage, info in report["models"].items():
        for runtime, r in info["runtimes"].items():
            if label not in r:
                notes.append(f"{stage} on {runtime}: not timed at batch {limits.budget_batch}; left out")
                continue
            c = _candidate(stage, runtime, r, label, reference)
            c["failed"] = _failures(c, limits, min_accuracy)
            candidates.append(c)
    meeting = [c for c in candidates if not c["failed"]]
    eligible = [c for c in meeting if not _slower_than_own_fp32(c, meeting, notes)]
    ranked = sorted(eligible, key=lambda c: (c["latency_ms"], -c["accuracy"], c["size_bytes"] or 0))
    out: dict[str, Any] = {
        "limits": {**asdict(limits), "min_accuracy": min_accuracy, "reference": reference},
        "ranked_by": f"median latency of one batch of {limits.budget_batch}",
        "candidates": len(candidates), "meeting": len(meeting),
        "choice": ranked[0] if ranked else None, "runner_up": ranked[1] if len(ranked) > 1 else None,
        "closest": None if ranked or not candidates else min(candidates, key=lambda c: _distance(c, limits)),
        "notes": notes,
    }
    out["lines"] = lines(out)
    return out


def _reference(report: dict[str, Any]) -> dict[str, Any] | None:
    teacher = report["models"].get("teacher", {}).get("runtimes", {})
    fp32 = [rt for rt, r in teacher.items() if _precision(rt, r) == "fp32"]
    for runtime in ("torch", "ort", *fp32):
        if runtime in fp32:
            return {"model": "teacher", "runtime": runtime, "accuracy": teacher[runtime]["accuracy"]}
    return None


def _precision(runtime: str, r: dict[str, Any]) -> str:
    return r.get("precision") or ("int8" if runtime.endswith("-int8") else "fp32")


def _candidate(stage: str, runtime: str, r: dict[str, Any], label: str, reference: dict | None) -> dict[str, Any]:
    t = r[label]
    export = r.get("export") or {}
    return {"model": stage, "runtime": runtime, "precision": _precision(runtime, r),
            "family": r.get("family") or runtime.removesuffix("-int8"), "accuracy": r["accuracy"],
            "drop_pt": None if reference is None else (reference["accuracy"] - r["accuracy"]) * PT,
            "ece": r["ece"], "latency_ms": t["median_ms"], "batch": t["batch"], "images_per_s": t["images_per_s"],
            "size_bytes": r.get("size_bytes"), "gate_failed": bool(export.get("allowed_by_flag")),
            "timing_flags": list(r.get("timing_flags") or [])}


def _failures(c: dict[str, Any], limits: Limits, min_accuracy: float | None) -> list[dict[str, Any]]:
    out = []
    if min_accuracy is not None and c["accuracy"] < min_accuracy - 1e-12:
        out.append({"limit": "max_drop", "value": c["accuracy"], "bound": min_accuracy,
                    "by": (min_accuracy - c["accuracy"]) * PT, "unit": "pt"})
    if limits.max_ece is not None and c["ece"] > limits.max_ece:
        out.append({"limit": "max_ece", "value": c["ece"], "bound": limits.max_ece,
                    "by": c["ece"] - limits.max_ece, "unit": ""})
    if limits.budget_ms is not None and c["latency_ms"] > limits.budget_ms:
        out.append({"limit": "budget_ms", "value": c["latency_ms"], "bound": limits.budget_ms,
                    "by": c["latency_ms"] - limits.budget_ms, "unit": "ms"})
    return out


def _slower_than_own_fp32(c: dict[str, Any], meeting: list[dict[str, Any]], notes: list[str]) -> bool:
    if c["precision"] != "int8":
        return False
    own = [f for f in meeting if f["model"] == c["model"] and f["family"] == c["family"] and f["precision"] == "fp32"
           and f["latency_ms"] <= c["latency_ms"]]
    if own:
        f = own[0]
        notes.append(f"{c['model']} on {c['runtime']} ({c['latency_ms']:.3f} ms) is not faster than its fp32 on "
                     f"{f['runtime']} ({f['latency_ms']:.3f} ms), which also meets the limits: INT8 not recommended")
    return bool(own)


def _distance(c: dict[str, Any], limits: Limits) -> tuple[int, float]:
    """Fewest limits missed first, then the smallest total miss, each relative to its limit's size."""
    scale = {"max_drop": max(limits.max_drop, 1.0), "max_ece": limits.max_ece or 1.0,
             "budget_ms": limits.budget_ms or 1.0}
    return len(c["failed"]), sum(f["by"] / scale[f["limit"]] for f in c["failed"])


def name(c: dict[str, Any]) -> str:
    gate = ", INT8 failed the export gate, kept by --allow-drop" if c["gate_failed"] else ""
    return f"{c['model']} on {c['runtime']} ({c['precision'].upper()}{gate})"


def numbers(c: dict[str, Any]) -> str:
    drop = "" if c["drop_pt"] is None else f" ({0.0 - c['drop_pt']:+.2f} pt vs the teacher's fp32)"
    size = "" if not c["size_bytes"] else f", {c['size_bytes'] / 1e6:.3f} MB"
    unstable = " [timing unstable]" if c["timing_flags"] else ""
    return (f"accuracy {c['accuracy'] * PT:.2f} %{drop}, ECE {c['ece']:.4f}, {c['latency_ms']:.3f} ms per batch "
            f"of {c['batch']} ({c['images_per_s']:,.0f} img/s){size}{unstable}")


def describe_limits(rec: dict[str, Any]) -> str:
    lim = rec["limits"]
    parts = []
    if lim["min_accuracy"] is not None:
        ref = lim["reference"]
        parts.append(f"accuracy ≥ {lim['min_accuracy'] * PT:.2f} % (the teacher's fp32 {ref['accuracy'] * PT:.2f} % "
                     f"on {ref['runtime']} − {lim['max_drop']:g} pt, --max-drop)")
    if lim["max_ece"] is not None:
        parts.append(f"ECE ≤ {lim['max_ece']:g} (--max-ece)")
    if lim["budget_ms"] is not None:
        parts.append(f"≤ {lim['budget_ms']:g} ms per batch of {lim['budget_batch']} (--budget-ms)")
    return "; ".join(parts) or "none"


def _miss(f: dict[str, Any]) -> str:
    if f["limit"] == "max_drop":
        return f"accuracy {f['value'] * PT:.2f} % is {f['by']:.2f} pt below {f['bound'] * PT:.2f} %"
    if f["limit"] == "max_ece":
        return f"ECE {f['value']:.4f} is {f['by']:.4f} above {f['bound']:g}"
    return f"{f['value']:.3f} ms is {f['by']:.3f} ms over {f['bound']:g} ms"


def lines(rec: dict[str, Any]) -> list[str]:
    """The recommendation in sentences: report.md's first section and the terminal's last lines."""
    out = []
    if rec["choice"] is not None:
        out.append(f"Ship {name(rec['choice'])}: {numbers(rec['choice'])}.")
        if rec["runner_up"] is not None:
            out.append(f"Runner-up: {name(rec['runner_up'])}: {numbers(rec['runner_up'])}.")
    elif rec["closest"] is not None:
        c = rec["closest"]
        out.append(f"Nothing meets the limits. Closest: {name(c)}: " + "; ".join(_miss(f) for f in c["failed"])
                   + f" ({numbers(c)}).")
    else:
        out.append("Nothing to recommend: no model was timed.")
    out.append(f"Limits: {describe_limits(rec)}; {rec['meeting']} of {rec['candidates']} model × runtime "
               f"candidates meet them; ranked by {rec['ranked_by']}.")
    return out + [f"Note: {n}." for n in rec["notes"]]
