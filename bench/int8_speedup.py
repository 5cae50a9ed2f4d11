"""ONNX Runtime INT8 vs fp32 on CPU for one exported model: throughput at batch 64, latency at batch 1.

Both sessions use the same thread count and the same real test images; rounds alternate fp32 and
INT8 so drift of the machine hits both alike; each number is the median of many timed runs after a
warm-up. Accuracy and agreement come from the parity check `kdedge export` recorded. Writes
bench/results/int8_speedup.json.

    kdedge export runs/fmnist_kd_cnn_seed0 --int8
    python bench/int8_speedup.py runs/fmnist_kd_cnn_seed0 --model student --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from export_timing import time_exports
from kdedge.io import write_json
from kdedge.run import RunDir, machine_info, package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "int8_speedup.json"
TARGET, GOAL, MAX_DROP = 2.5, 3.0, 0.003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--model", default="student")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per round and session")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run = RunDir(args.run)
    manifest = run.read_manifest()
    exports = manifest.get("exports", {}).get(args.model)
    if not exports or "onnx" not in exports or "onnx-int8" not in exports:
        raise SystemExit(f"{args.run}: no onnx + onnx-int8 exports of {args.model}; run `kdedge export {args.run} --int8`")
    formats = [f for f in ("onnx", "onnx-int8", "onnx-int8-trt") if f in exports]
    timed = time_exports(run, {f: (args.model, f) for f in formats}, threads=args.threads, rounds=args.rounds,
                         runs=args.runs)
    result = {"run": str(args.run), "model": args.model, "threads": args.threads, "formats": timed}
    fp32, int8 = result["formats"]["onnx"], result["formats"]["onnx-int8"]
    result["speedup_batch64"] = fp32["batch64"]["median_ms"] / int8["batch64"]["median_ms"]
    result["speedup_batch1"] = fp32["batch1"]["median_ms"] / int8["batch1"]["median_ms"]
    result["accuracy_drop_pt"] = (fp32["accuracy"] - int8["accuracy"]) * 100
    result["size_ratio"] = fp32["bytes"] / int8["bytes"]
    result["targets"] = {"speedup_batch64": TARGET, "goal": GOAL, "max_drop_pt": MAX_DROP * 100,
                         "met": result["speedup_batch64"] >= TARGET and result["accuracy_drop_pt"] <= MAX_DROP * 100}
    result["quantization"] = exports["onnx-int8"].get("quantization"), exports["onnx-int8"]["settings"]
    result.update(machine=machine_info(), versions=package_versions())
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("speedup_batch64", "speedup_batch1", "accuracy_drop_pt", "size_ratio",
                                              "targets")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
