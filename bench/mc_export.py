"""MC dropout inside the exported model: latency of model.mc.onnx at N = 10, 30, 100 vs one deterministic
pass of model.onnx, on ONNX Runtime's CPU provider, fp32 and INT8, in one run.

The model is a VGG-style teacher whose dropout sits in its classifier (vgg11, BatchNorm, hidden [256, 256],
dropout 0.5, 3x32x32 inputs, 10 classes), randomly initialised: weights do not change the time. The MC graphs
come from kdedge.export.onnx_mc (the prefix runs once, only the classifier runs N times on N*B rows), the INT8
ones from the export's quantizers (plain: kdedge.export.ort_int8 static QDQ; MC: kdedge.export.mc_formats,
the MC statistics in fp32), calibrated on random normal images. Every session has 1 intra-op thread; rounds
alternate all variants so drift of the shared machine hits them alike; each time is the median of many runs
(kdedge.bench.timing). Goal: the MC model at N = 100 costs <= 5x one deterministic pass.
Writes bench/results/mc_export.{json,md}.

    python bench/mc_export.py
    python bench/mc_export.py --rounds 3 --runs 5 --out /tmp/mc.json    # a quick look
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from kdedge.bench.timing import time_interleaved
from kdedge.export.mc_formats import quantize_mc
from kdedge.export.onnx_fp32 import export_onnx
from kdedge.export.onnx_mc import export_mc_onnx
from kdedge.export.ort_int8 import quantize_static_qdq
from kdedge.export.ort_session import open_session
from kdedge.io import write_result
from kdedge.models import build_model
from kdedge.run import machine_info, package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "mc_export.json"
SAMPLES = (10, 30, 100)
GOAL = 5.0  # MC at N = 100 over one deterministic pass
MODEL = ("vgg11", {"hidden": [256, 256], "dropout": 0.5})
SHAPE = (3, 32, 32)


def build_variants(root: Path, calib_images: int, seed: int) -> tuple[dict[str, Path], dict]:
    torch.manual_seed(seed)
    name, options = MODEL
    model = build_model(name, in_channels=SHAPE[0], num_classes=10, image_size=SHAPE[1], **options).eval()
    sample = torch.zeros(2, *SHAPE)
    calibration = np.random.default_rng(seed).standard_normal((calib_images, *SHAPE), dtype=np.float32)
    files = {"plain fp32": root / "model.onnx", "plain int8": root / "model.int8.onnx"}
    export_onnx(model, sample, files["plain fp32"])
    quantize_static_qdq(files["plain fp32"], files["plain int8"], calibration, method="minmax", input_name="images")
    split_at = None
    for n in SAMPLES:
        fp32, int8 = root / f"model.mc{n}.onnx", root / f"model.mc{n}.int8.onnx"
        split_at = export_mc_onnx(model, n, sample, fp32).split_at
        quantize_mc(fp32, int8, calibration)
        files[f"mc{n} fp32"], files[f"mc{n} int8"] = fp32, int8
    info = {"model": name, "options": options, "input": list(SHAPE), "weights": "random init (untrained)",
            "parameters": sum(p.numel() for p in model.parameters()), "split_at": split_at,
            "calibration": f"{calib_images} random normal images, minmax"}
    return files, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 32])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per round and variant at batch 1 "
                                                             "(larger batches: a quarter, at least 2)")
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kdedge-mc-bench-") as tmp:
        files, info = build_variants(Path(tmp), args.calib_images, args.seed)
        sessions = {name: open_session(path, threads=1) for name, path in files.items()}
        sizes = {name: path.stat().st_size for name, path in files.items()}
        rng = np.random.default_rng(args.seed + 1)
        timings = {}
        for batch in args.batches:
            x = rng.standard_normal((batch, *SHAPE), dtype=np.float32)
            calls = {name: (lambda s=s: s.run(None, {"images": x})) for name, s in sessions.items()}
            runs = args.runs if batch == 1 else max(2, args.runs // 4)
            got = time_interleaved(calls, batch=batch, rounds=args.rounds, runs=runs, warmup=max(3, runs // 2))
            timings[f"batch{batch}"] = {name: t.to_dict() for name, t in got.items()}
            print(f"batch {batch}: " + ", ".join(f"{k} {t.median_ms:.2f} ms" for k, t in got.items()))
    result = {"info": info, "samples": list(SAMPLES), "threads": 1, "rounds": args.rounds, "runs": args.runs,
              "sizes_bytes": sizes, "timings": timings, "ratios": ratios(timings), "goal": GOAL,
              "machine": machine_info(), "versions": package_versions(),
              "load_average": {"before": load_before, "after": os.getloadavg()}}
    at100 = [r[f"mc100 {p} / plain {p}"] for r in result["ratios"].values() for p in ("fp32", "int8")]
    result["worst_mc100_ratio"] = max(at100)
    result["meets_goal"] = max(at100) <= GOAL
    write_result(args.out, result, markdown(result))


def ratios(timings: dict) -> dict:
    out = {}
    for label, t in timings.items():
        row = {}
        for n in SAMPLES:
            for p in ("fp32", "int8"):
                row[f"mc{n} {p} / plain {p}"] = t[f"mc{n} {p}"]["median_ms"] / t[f"plain {p}"]["median_ms"]
            row[f"mc{n} int8 / plain fp32"] = t[f"mc{n} int8"]["median_ms"] / t["plain fp32"]["median_ms"]
        row["plain int8 speedup"] = t["plain fp32"]["median_ms"] / t["plain int8"]["median_ms"]
        out[label] = row
    return out


def markdown(result: dict) -> str:
    info, machine = result["info"], result["machine"]
    lines = ["# MC dropout in the exported model: latency vs one deterministic pass (ORT CPU, 1 thread)", "",
             f"Model: {info['model']} {info['options']}, input {'x'.join(map(str, info['input']))}, "
             f"{info['parameters']:,} parameters, {info['weights']}; the MC graph repeats from `{info['split_at']}` "
             f"(the classifier) on. INT8: ORT static QDQ ({info['calibration']}); the MC statistics stay fp32.", "",
             f"CPU: {machine['cpu']}, {machine['logical_cores']} logical cores; SIMD flags: "
             f"{', '.join(machine['simd']) or 'none reported'}. onnxruntime {result['versions'].get('onnxruntime', '?')}. "
             f"Load average before {result['load_average']['before'][0]:.2f}, after "
             f"{result['load_average']['after'][0]:.2f} (1 min; the machine was shared). Timing: {result['rounds']} "
             "interleaved rounds, medians.", ""]
    for label, t in result["timings"].items():
        r = result["ratios"][label]
        lines += [f"## {label.replace('batch', 'batch ')}", "",
                  "| variant | median ms | p10 / p90 ms | × plain (same precision) | × plain fp32 |", "|---|---:|---:|---:|---:|"]
        for name, v in t.items():
            kind, precision = name.split()
            same = 1.0 if kind == "plain" else r[f"{kind} {precision} / plain {precision}"]
            vs_fp32 = v["median_ms"] / t["plain fp32"]["median_ms"]
            lines.append(f"| {name} | {v['median_ms']:.3f} | {v['p10_ms']:.3f} / {v['p90_ms']:.3f} | {same:.2f}× | "
                         f"{vs_fp32:.2f}× |")
        lines.append("")
    lines += [f"Goal: MC at N = 100 ≤ {result['goal']:.0f}× one deterministic pass of the same precision, every "
              f"batch: {'met' if result['meets_goal'] else 'not met'} (worst {result['worst_mc100_ratio']:.2f}×). "
              "Why it is cheap here: the convolutions (the prefix) run once; only the classifier (512 -> 256 -> "
              "256 -> 10) runs on N×B rows.", "",
              "Reproduce: `python bench/mc_export.py`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
