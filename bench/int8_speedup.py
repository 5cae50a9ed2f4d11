"""ONNX Runtime INT8 vs fp32 on CPU for one exported model: throughput at batch 64, latency at batch 1.

Both sessions use the same thread count and the same real test images; rounds alternate fp32 and
INT8 so drift of the machine hits both alike; each number is the median of many timed runs after a
warm-up. Accuracy and agreement come from the parity check `kdedge export` recorded. Writes
bench/results/int8_speedup.json.

    kdedge export runs/fmnist_kd_cnn_seed0 --int8
    python bench/int8_speedup.py runs/fmnist_kd_cnn_seed0 --model student --threads 1

`--zoo` instead trains the zoo's edge students briefly on the embedded data and compares fp32 and INT8
on ONNX Runtime and OpenVINO, with what kdedge's recommendation would ship (bench/int8_speedup_zoo.py);
writes bench/results/int8_speedup_zoo.{json,md}:

    python bench/int8_speedup.py --zoo            # 7 edge students: 43 min on 2 shared cores, mostly training
    python bench/int8_speedup.py --zoo --models resnet18 --runs 5 --out /tmp/zoo.json   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from export_timing import time_exports
from kdedge.io import write_json, write_result
from kdedge.run import RunDir, machine_info, package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "int8_speedup.json"
ZOO_RESULTS = RESULTS.with_name("int8_speedup_zoo.json")
TARGET, GOAL, MAX_DROP = 2.5, 3.0, 0.003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", help="a run with onnx + onnx-int8 exports (not with --zoo)")
    parser.add_argument("--model", default="student")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 10; --zoo: 7 at batch 1)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs per round and session (default 50; --zoo: 30 at batch 1)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} ({ZOO_RESULTS.name} with --zoo)")
    zoo = parser.add_argument_group("--zoo: the edge students, trained here briefly")
    zoo.add_argument("--zoo", action="store_true")
    zoo.add_argument("--models", type=lambda s: [m.strip() for m in s.split(",") if m.strip()], default=None,
                     help="comma-separated (default: the edge students but resnet34/resnet50/mobilenet_v3_large)")
    zoo.add_argument("--all", action="store_true", help="also resnet34, resnet50, mobilenet_v3_large")
    zoo.add_argument("--steps", type=int, default=150, help="SGD steps of batch 64")
    zoo.add_argument("--lr", type=float, default=0.05)
    zoo.add_argument("--size", type=int, default=32, help="input side (28: the images as they are)")
    zoo.add_argument("--calib-images", type=int, default=256)
    zoo.add_argument("--rounds64", type=int, default=3)
    zoo.add_argument("--runs64", type=int, default=3)
    zoo.add_argument("--train-threads", type=int, default=os.cpu_count() or 1)
    zoo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.zoo:
        return zoo_main(args)
    if args.run is None:
        parser.error("give a run directory, or --zoo")
    args.rounds, args.runs, args.out = args.rounds or 10, args.runs or 50, args.out or RESULTS
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


def zoo_main(args: argparse.Namespace) -> None:
    from int8_speedup_zoo import markdown, run

    args.rounds, args.runs, args.out = args.rounds or 7, args.runs or 30, args.out or ZOO_RESULTS
    result = run(args, partial=lambda r: write_json(args.out.with_suffix(".partial.json"), r))
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    write_result(args.out, result, markdown(result))  # atomically: the .json and the .md beside it


if __name__ == "__main__":
    main()
