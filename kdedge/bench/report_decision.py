"""The parts of the bench report that a ship / don't-ship decision rests on: what to ship (first), the
accuracy-vs-latency plot, KD against its baseline, INT8 exports kept past a failed gate, unstable
timings, a temperature that made test calibration worse, and the files measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdedge.bench.kd_gain import sentence
from kdedge.bench.timing import stability_advice
from kdedge.export.route import fp32_layers, int8_route, speed_cost
from kdedge.markdown import markdown_table

GATE_MARK = "†"      # INT8 export that failed the parity gate, kept by --allow-drop
UNSTABLE_MARK = "⚠"  # timings flagged by kdedge.bench.timing.stability_flags
TRADEOFF_PNG = "tradeoff.png"


def runtime_label(entry: dict[str, Any], runtime: str) -> str:
    return runtime + (f" {GATE_MARK}" if (entry.get("export") or {}).get("allowed_by_flag") else "")


def route_of(stage: str, entry: dict[str, Any], *, short: bool = False) -> str:
    """An INT8 row's route (PTQ, PTQ + N fp32 layers, QAT-KD) from the export record the bench copied; '—'
    for fp32 rows."""
    if entry.get("precision", "fp32") == "fp32":
        return "—"
    return int8_route(stage, entry.get("export"), short=short) or "—"


def label_of(report: dict[str, Any], stage: str, runtime: str) -> str:
    return runtime_label(report["models"].get(stage, {}).get("runtimes", {}).get(runtime, {}), runtime)


def decision_lines(report: dict[str, Any], plot: bool) -> list[str]:
    """report.md's opening: the recommendation, the plot, and whether KD helped."""
    rec = report.get("recommendation")
    out = ["## What to ship", ""]
    out += [f"- {line}" for line in (rec["lines"] if rec else ["not computed"])] + [""]
    if plot:
        out += [f"![accuracy vs latency]({TRADEOFF_PNG})", ""]
    kd = report.get("kd_vs_baseline")
    if kd:
        out += ["## KD student vs its baseline (same architecture, trained without the teacher)", "",
                sentence(kd) + f"; fp32 predictions on `{kd['runtime']}`.", ""]
    return out


def caveat_lines(report: dict[str, Any]) -> list[str]:
    """Below the main table: gate failures kept by --allow-drop, unstable timings."""
    out = []
    kept = [(s, rt, r["export"].get("parity_failures") or []) for s, info in report["models"].items()
            for rt, r in info["runtimes"].items() if (r.get("export") or {}).get("allowed_by_flag")]
    if kept:
        out += [f"{GATE_MARK} INT8 export that **failed the parity gate** and was kept with `kdedge export "
                "--allow-drop`:", ""]
        out += [f"- {s} on {rt}: {'; '.join(failures) or 'gate failed'}" for s, rt, failures in kept] + [""]
    notes = report.get("timing_notes") or []
    if notes:
        out += [f"{UNSTABLE_MARK} **Unstable timings** (p90/median above 1.5, or a larger batch slower per image "
                f"than batch 1): {stability_advice(report.get('threads'))}.", ""] + [f"- {n}" for n in notes] + [""]
    return out


def route_lines(report: dict[str, Any]) -> list[str]:
    """The INT8 rows whose export kept layers in fp32: which layers, the agreement before and after, the
    speed cost; and which route each INT8 row took (QAT-KD is the other way to rescue an INT8 model)."""
    rows, kept = [], []
    for stage, info in report["models"].items():
        for runtime, r in info["runtimes"].items():
            if r.get("precision", "fp32") == "fp32":
                continue
            rows.append([stage, runtime_label(r, runtime), route_of(stage, r)])
            layers = fp32_layers(r.get("export"))
            if layers:
                kept.append([stage, runtime_label(r, runtime), ", ".join(f"`{n}`" for n in layers),
                             speed_cost(r.get("export"))])
    if not rows:
        return []
    out = ["## INT8 routes", "", "PTQ: post-training quantization on calibration images; PTQ + N fp32 layers: the "
           "export failed the parity gate and kept its N most sensitive layers in fp32 (`kdedge export "
           "--max-fp32-layers`); QAT-KD: the student trained under simulated INT8 (`quant:` in the recipe).", "",
           markdown_table(["model", "runtime", "route"], rows), ""]
    if kept:
        out += ["Layers kept in fp32 and what they cost (timed by `kdedge export` against the plain INT8 model):", "",
                markdown_table(["model", "runtime", "layers in fp32", "speed cost"], kept), ""]
    return out


def temperature_lines(report: dict[str, Any]) -> list[str]:
    check = report["calibration"].get("temperature_check")
    if not check or not check["worse"]:
        return []
    return [f"**Temperature scaling made test calibration worse**: the teacher's test ECE went from "
            f"{check['test_ece_before']:.4f} to {check['test_ece_after']:.4f} at T*. T* is fitted on the validation "
            "split; a small one gives a noisy T*. Use a larger `data.val_fraction`, or ship the teacher at T = 1.", ""]


def files_lines(report: dict[str, Any]) -> list[str]:
    rows = []
    for stage, info in report["models"].items():
        for runtime, r in info["runtimes"].items():
            if "sha256" in r:
                export = r.get("export") or {}
                gate = ("—" if "allowed_by_flag" not in export else
                        "failed, kept by --allow-drop" if export["allowed_by_flag"] else "passed")
                rows.append([stage, runtime_label(r, runtime), f"`{r['file']}`", f"`{r['sha256'][:16]}…`", gate])
    if not rows:
        return []
    return ["## Files measured", "", markdown_table(["model", "runtime", "file", "SHA-256", "export gate"], rows), "",
            "Full SHA-256 and export settings: `report.json` (models.*.runtimes.*.sha256 / export).", ""]


def write_tradeoff(report: dict[str, Any], out_dir: Path) -> Path | None:
    from kdedge.plots import tradeoff_plot

    rec = report.get("recommendation") or {}
    batch = (rec.get("limits") or {}).get("budget_batch", 1)
    points = []
    for stage, info in report["models"].items():
        for runtime, r in info["runtimes"].items():
            if f"batch{batch}" in r:
                points.append({"model": stage, "runtime": runtime, "family": r.get("family", runtime),
                               "precision": r.get("precision", "fp32"), "accuracy": r["accuracy"],
                               "latency_ms": r[f"batch{batch}"]["median_ms"], "size_bytes": r.get("size_bytes"),
                               "gate_failed": bool((r.get("export") or {}).get("allowed_by_flag"))})
    if not points:
        return None

    def key(c: dict | None) -> tuple[str, str] | None:
        return (c["model"], c["runtime"]) if c else None

    path = out_dir / TRADEOFF_PNG
    limits = rec.get("limits") or {}
    tradeoff_plot(points, path, title=f"{report['recipe']}: accuracy vs latency ({report['threads']} thread(s))",
                  xlabel=f"median latency per batch of {batch} (ms, log scale)", min_accuracy=limits.get("min_accuracy"),
                  budget_ms=limits.get("budget_ms"), chosen=key(rec.get("choice")), runner_up=key(rec.get("runner_up")))
    return path
