"""The bench report for people: Markdown tables, reliability PNGs, and the rich table in the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdedge.bench.jetson import TRT_DIR
from kdedge.bench.mc_onnx import report_lines as mc_onnx_lines
from kdedge.bench.ood import report_lines as ood_lines
from kdedge.bench.report_decision import (TRADEOFF_PNG, UNSTABLE_MARK, caveat_lines, decision_lines, files_lines,
                                          label_of, route_lines, route_of, runtime_label, temperature_lines,
                                          write_tradeoff)
from kdedge.io import write_text
from kdedge.markdown import markdown_table
from kdedge.metrics import CalibrationBins
from kdedge.plots import reliability_diagram

COLUMNS = ["model", "runtime", "size MB", "params", "MMACs", "acc", "NLL", "ECE", "MCE",
           "ms/img b1 (p10–p90)", "img/s bN", "teacher/this b1", "INT8 route"]


def rows(report: dict[str, Any]) -> list[list[Any]]:
    out = []
    batch = f"batch{report['batch']}"
    for stage, info in report["models"].items():
        for runtime, r in info["runtimes"].items():
            b1 = r.get("batch1")
            ratio = report["ratios"].get(stage, {}).get(runtime, {}).get("batch1")
            out.append([
                stage, runtime_label(r, runtime), f"{r['size_bytes'] / 1e6:.3f}" if r.get("size_bytes") else "—",
                f"{info['parameters']:,}", "—" if info["macs"] is None else f"{info['macs'] / 1e6:.2f}",
                f"{r['accuracy']:.4f}", f"{r['nll']:.4f}",
                f"{r['ece']:.4f}", f"{r['mce']:.4f}",
                (f"{b1['median_ms']:.3f} ({b1['p10_ms']:.3f}–{b1['p90_ms']:.3f})" if b1 else "—")
                + (f" {UNSTABLE_MARK}" if r.get("timing_flags") else ""),
                f"{r[batch]['images_per_s']:,.0f}" if batch in r else "—",
                f"{ratio:.2f}×" if ratio else ("1×" if stage == "teacher" else "—"),
                route_of(stage, r),
            ])
    return out


def write_markdown(report: dict[str, Any], out_dir: Path) -> Path:
    m = report["machine"]
    where = f" on `{report['host']}` over SSH" if report.get("host") else ""
    versions = report["versions"]
    openvino = f", openvino {versions['openvino']}" if "openvino" in versions else ""
    lines = [f"# kdedge bench: {report['recipe']} ({report['run']})", "",
             *decision_lines(report, (out_dir / TRADEOFF_PNG).is_file()),
             f"Device `{report['device']}`{where}, {report['threads']} thread(s), CPU {m['cpu']} "
             f"({m['logical_cores']} logical cores); torch {versions.get('torch')}, onnxruntime "
             f"{versions.get('onnxruntime')}{openvino}. Test split: {report['data']['test_images']} images of "
             f"{report['data']['dataset']}. Timings: median of {report['timing']['rounds']}×"
             f"{report['timing']['runs_per_round']} runs after warm-up, models interleaved per runtime.", "",
             "## Models × runtimes", "", markdown_table(COLUMNS, rows(report)), "", *caveat_lines(report),
             *route_lines(report)]
    if "device_info" in report:
        lines += device_info_lines(report["device_info"])
    if "trtexec" in report:
        lines += trtexec_lines(report["trtexec"], report["batch"])
    ratios = report["ratios"]
    if ratios:
        lines += ["## Teacher / student inference-time ratios (same runtime)", "",
                  markdown_table(["model", "runtime", "batch 1", f"batch {report['batch']}"],
                                 [[s, label_of(report, s, rt), f"{v.get('batch1', 0):.2f}×", f"{v.get('batch' + str(report['batch']), 0):.2f}×"]
                                  for s, by_rt in ratios.items() for rt, v in by_rt.items()]), ""]
    cal = report["calibration"]
    lines += ["## Calibration (fp32 torch, test split)", "", "![reliability](reliability.png)", "",
              "Marker area grows with the bin's image count; hollow markers are bins with too few images to "
              "read much into.", "", *temperature_lines(report)]
    if cal.get("teacher_temperature") and cal.get("teacher_bins_at_temperature"):  # (the teacher was benched)
        before = CalibrationBins.from_dict(cal["bins"]["teacher"])
        after = CalibrationBins.from_dict(cal["teacher_bins_at_temperature"])
        lines += [f"Teacher temperature T* = {cal['teacher_temperature']:.4f}: ECE {before.ece:.4f} → {after.ece:.4f}, "
                  f"MCE {before.mce:.4f} → {after.mce:.4f} (![teacher](reliability_teacher_T.png))", ""]
    unc = report.get("uncertainty", {})
    if "models" in unc:
        lines += [f"## MC dropout ({unc['samples']} passes, seed {unc['seed']}, torch; ONNX/TensorRT run dropout "
                  "as identity)", ""]
        mc_rows = []
        for stage, m in unc["models"].items():
            if not m["applicable"]:
                mc_rows.append([stage, m["reason"], "", "", "", "", ""])
            else:
                mc_rows.append([stage, f"{m['accuracy']:.4f}", f"{m['ece']:.4f}", f"{m['nll']:.4f}",
                                f"{m['mean_confidence']:.4f}", f"{m['mean_entropy']:.4f}", f"{m['mean_variance']:.2e}"])
        lines += [markdown_table(["model", "MC accuracy", "MC ECE", "MC NLL", "mean confidence", "mean entropy",
                                  "mean variance"], mc_rows), ""]
        if unc.get("mupe"):
            lines += ["MUPE (mean (conf_teacher − conf_student)², MC-averaged confidences; masks: "
                      f"{unc.get('masks', 'shared')}, {unc.get('masks_note', 'recorded before independent masks')}):", "",
                      markdown_table(["student", "MUPE", "student confidence from"],
                                     [[s, f"{v['value']:.5f}", v["student_confidence"]] for s, v in unc["mupe"].items()]),
                      ""]
        if any(m["applicable"] for m in unc["models"].values()):
            lines += ["![MC reliability](reliability_mc.png)", ""]
    lines += mc_onnx_lines(report)
    lines += ood_lines(report)
    lines += files_lines(report)
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def device_info_lines(info: dict[str, Any]) -> list[str]:
    """The Jetson's power mode, releases and tegrastats summary (what a timing on it depends on)."""
    def missing(part: dict[str, Any]) -> str | None:
        return None if part.get("available") else f"unavailable ({part.get('reason', 'unknown')})"

    mode, release, trt = info.get("power_mode", {}), info.get("release", {}), info.get("tensorrt", {})
    rows = [["power mode (nvpmodel -q)", missing(mode) or f"{mode['name']} (id {mode['id']})"],
            ["L4T / JetPack", missing(release) or f"L4T {release.get('l4t') or '?'}, JetPack "
                                                  f"{release.get('jetpack') or '? (no nvidia-jetpack package)'}"],
            ["TensorRT", missing(trt) or f"{trt['version']} ({trt['source']})"]]
    stats = info.get("tegrastats", {})
    if stats.get("available"):
        def mean_max(key: str, unit: str) -> str:
            v = stats.get(key)
            return f"mean {v['mean']:.0f} {unit}, max {v['max']:.0f} {unit}" if v else "—"

        hottest = max(stats["temperature_c_max"].items(), key=lambda kv: kv[1], default=None)
        rows += [["tegrastats samples", f"{stats['samples']} every {stats['interval_ms']} ms, during the measurements"],
                 ["GPU load / clock", f"{mean_max('gpu_load_percent', '%')}; {mean_max('gpu_freq_mhz', 'MHz')}"],
                 ["input power", mean_max("input_power_mw", "mW")],
                 ["hottest sensor", f"{hottest[0]} {hottest[1]:.1f} °C" if hottest else "—"]]
    elif stats:
        rows.append(["tegrastats", missing(stats) or "—"])
    return ["## Device", "", markdown_table(["what", "value"], rows), ""]


def trtexec_lines(trt: dict[str, Any], batch: int) -> list[str]:
    """TensorRT engines built on the device by trtexec: latency at batch 1, throughput at --batch."""
    if not trt.get("available"):
        return ["## TensorRT (trtexec)", "", f"Not measured: {trt.get('reason', 'unknown')}.", ""]
    rows = []
    for stage, by_precision in trt["models"].items():
        for precision, r in by_precision.items():
            b1, bn = r.get("batch1") or {}, r.get(f"batch{batch}") or {}
            latency = (b1.get("latency") or {})
            rows.append([stage, precision, r["export"],
                         _ms(latency.get("median_ms")) + f" ({_ms(latency.get('p90_ms'))})" if latency else "—",
                         f"{bn['images_per_s']:,.0f}" if bn.get("images_per_s") else "—",
                         r.get("error") or "ok"])
    return ["## TensorRT (trtexec, engines built on the device)", "",
            markdown_table(["model", "precision", "from", "ms/batch-1 query median (p90)", f"img/s batch {batch}",
                            "status"], rows),
            "", f"Engines and full trtexec logs: `bench/{TRT_DIR}/`.", ""]


def _ms(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "?"


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    tradeoff = write_tradeoff(report, out_dir)
    cal = report["calibration"]
    curves = {stage: CalibrationBins.from_dict(b) for stage, b in cal["bins"].items()}
    paths = [out_dir / "reliability.png"]
    reliability_diagram(curves, paths[0], title=f"{report['recipe']}: reliability, test split (fp32 torch)")
    if cal.get("teacher_bins_at_temperature"):
        paths.append(out_dir / "reliability_teacher_T.png")
        reliability_diagram({"teacher": curves["teacher"],
                             f"teacher at T*={cal['teacher_temperature']:.3f}":
                                 CalibrationBins.from_dict(cal["teacher_bins_at_temperature"])},
                            paths[-1], title="teacher before / after temperature scaling")
    mc = {s: CalibrationBins.from_dict(m["bins"]) for s, m in report.get("uncertainty", {}).get("models", {}).items()
          if m.get("applicable")}
    if mc:
        paths.append(out_dir / "reliability_mc.png")
        reliability_diagram(mc, paths[-1], title=f"{report['recipe']}: MC-dropout reliability (torch)")
    return paths + ([tradeoff] if tradeoff else [])


def terminal_table(report: dict[str, Any]):
    from rich.markup import escape
    from rich.table import Table

    where = f" on {report['host']}" if report.get("host") else ""
    table = Table(title=escape(f"kdedge bench {report['run']} ({report['device']}{where})"))
    short = ["model", "runtime", "size MB", "acc", "ECE", "ms b1", "img/s bN", "T/S b1", "INT8 route"]
    for c in short:
        table.add_column(c, justify="left" if c in ("model", "runtime", "INT8 route") else "right")
    routes = [route_of(stage, r, short=True) for stage, info in report["models"].items()
              for r in info["runtimes"].values()]  # the order of rows()
    for r, route in zip(rows(report), routes):
        table.add_row(r[0], r[1], r[2], r[5], r[7], r[9].split(" ")[0] + (f" {UNSTABLE_MARK}" if UNSTABLE_MARK in r[9]
                                                                         else ""), r[10], r[11], escape(route))
    if any("fp32" in route for route in routes):
        table.caption = "INT8 route +N fp32: N layers kept in fp32 by the export's fallback (report.md: which, and why)"
    return table
