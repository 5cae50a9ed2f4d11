"""Data-parallel scaling: training images/s of one process vs N processes (`kdedge train --nproc-per-node`).

Each variant trains the same recipe's teacher (the same global batch) from scratch in its own run
directory; images/s is the mean over epochs after the first (which pays for start-up) of the global
throughput the run records. Variants are interleaved, `--repeats` times, so load on the machine hits
all of them alike. On CPU the variants are (processes x threads): 1x1, 1xN and Nx1 — N processes on N
cores are only worth having if they beat one process using the same N cores with threads.

    python bench/ddp_scaling.py                         # CPU, gloo, 2 processes, the embedded FMNIST subset
    python bench/ddp_scaling.py --device cuda --nproc 8 # one node with 8 GPUs (NCCL)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kdedge.io import write_result
from kdedge.markdown import markdown_table
from kdedge.run import machine_info, package_versions

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("kdedge")


def recipe(out_dir: Path, name: str, device: str, epochs: int) -> Path:
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    raw.pop("student"), raw.pop("distill")
    raw.update(name=name, output_dir=str(out_dir), device=device)
    raw["teacher"]["train"].update(epochs=epochs, batch_size=128, eval_every=epochs)
    raw["teacher"]["calibrate"] = False
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_once(out_dir: Path, name: str, *, procs: int, threads: int, device: str, epochs: int) -> dict[str, Any]:
    cmd = [str(EXE), "train", str(recipe(out_dir, name, device, epochs)), "--force", "--threads", str(threads)]
    if procs > 1:
        cmd += ["--nproc-per-node", str(procs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    history = json.loads((out_dir / name / "teacher" / "metrics.json").read_text())["history"]
    rates = [h["train_images_per_s"] for h in history[1:]] or [history[0]["train_images_per_s"]]
    return {"images_per_s": statistics.mean(rates), "wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ddp_scaling.json")
    args = parser.parse_args(argv)
    n = args.nproc
    variants = ([(1, 1), (1, n), (n, 1)] if args.device == "cpu" else [(1, 1), (n, 1)])  # (processes, threads)
    samples: dict[str, list[dict[str, Any]]] = {f"{p}x{t}": [] for p, t in variants}
    with tempfile.TemporaryDirectory(prefix="kdedge-ddp-bench-") as tmp:
        for r in range(args.repeats):
            for p, t in variants:
                key = f"{p}x{t}"
                got = train_once(Path(tmp), f"p{p}t{t}", procs=p, threads=t, device=args.device, epochs=args.epochs)
                samples[key].append(got)
                print(f"repeat {r + 1}/{args.repeats}  {key}: {got['images_per_s']:,.0f} img/s  ({got['wall_s']:.1f} s)")
    base = statistics.median(s["images_per_s"] for s in samples["1x1"])
    rows, table = [], {}
    for p, t in variants:
        key = f"{p}x{t}"
        rate = statistics.median(s["images_per_s"] for s in samples[key])
        wall = statistics.median(s["wall_s"] for s in samples[key])
        table[key] = {"processes": p, "threads_per_process": t, "images_per_s_median": rate,
                      "images_per_s": [s["images_per_s"] for s in samples[key]], "wall_s_median": wall,
                      "speedup_vs_1x1": rate / base}
        rows.append([str(p), str(t), f"{rate:,.0f}", f"{rate / base:.2f}x", f"{wall:.1f}"])
    result = {"device": args.device, "epochs": args.epochs, "repeats": args.repeats, "global_batch": 128,
              "recipe": "recipes/demo.yaml teacher (cnn, embedded FMNIST subset, 3,600 training images)",
              "variants": table, "machine": machine_info(), "versions": package_versions()}
    md = (f"# Data-parallel scaling ({args.device}, {'gloo' if args.device == 'cpu' else 'nccl'})\n\n"
          + markdown_table(["processes", "threads each", "train images/s (median)", "vs 1x1", "wall s (median)"], rows)
          + f"\n\nThe demo teacher, global batch 128, {args.epochs} epochs (the first not counted), "
            f"{args.repeats} interleaved repeats; {machine_info()['logical_cores']} logical cores.\n")
    write_result(args.out, result, md)


if __name__ == "__main__":
    main()
