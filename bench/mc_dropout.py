"""MC dropout at N=100: batched fast path vs the naive N-full-passes loop vs one plain forward pass.

Real images (the embedded fashion_mnist_small test split, normalised with the train-split statistics),
randomly initialised dropout models (weights do not change the time; accuracy/ECE here are those of
untrained nets and only show that the metrics run). Per model, rounds alternate plain, fast and
naive so drift of a shared machine hits all alike; each time is the median over rounds. The fast and
naive results use identical dropout masks and must agree to 1e-5. Writes bench/results/mc_dropout.json.

    python bench/mc_dropout.py
    python bench/mc_dropout.py --models cnn --images 512 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from kdedge.data import load_dataset
from kdedge.inference import uses_conv
from kdedge.inputs import InputStats
from kdedge.io import write_json
from kdedge.bench.timing import summarise_times
from kdedge.models import build_model
from kdedge.run import machine_info, package_versions
from kdedge.train.batches import prepare_batch
from kdedge.uncertainty import McResult, mc_dropout_predict, mc_metrics

RESULTS = Path(__file__).resolve().parent / "results" / "mc_dropout.json"
SPEEDUP_MIN, COST_MAX, ATOL = 20.0, 5.0, 1e-5
FIELDS = ("mean_probs", "confidence", "entropy", "variance", "predicted_variance", "mutual_information",
          "mean_log_probs")
# model -> (options, images): naive N=100 is ~100 plain passes, so the deeper net gets fewer images
MODELS: dict[str, tuple[dict, int]] = {
    "cnn": ({"channels": [32, 64, 128], "dropout": 0.2}, 256),
    "resnet20": ({"dropout": 0.2}, 64),
}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def max_abs_diff(a: McResult, b: McResult) -> float:
    return max(float((getattr(a, f).double() - getattr(b, f).double()).abs().max()) for f in FIELDS)


def bench_model(name: str, options: dict, x: torch.Tensor, labels: torch.Tensor, *, samples: int,
                batch_size: int, rounds: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(name, in_channels=1, num_classes=10, image_size=28, **options).eval()
    if uses_conv(model):
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def plain() -> torch.Tensor:  # one deterministic eval pass, batched like the MC calls
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def fast() -> McResult:
        return mc_dropout_predict(model, x, samples=samples, seed=seed, batch_size=batch_size)

    def naive() -> McResult:
        return mc_dropout_predict(model, x, samples=samples, seed=seed, batch_size=batch_size, fast=False)

    plain(), fast()  # warm-up (naive runs the same kernels as plain)
    times: dict[str, list[float]] = {"plain": [], "fast": [], "naive": []}
    results: dict[str, McResult] = {}
    for _ in range(rounds):
        for kind, fn in (("plain", plain), ("fast", fast), ("naive", naive)):
            s, out = timed(fn)
            times[kind].append(s)
            if isinstance(out, McResult):
                results[kind] = out
    fast_r, naive_r = results["fast"], results["naive"]
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = max_abs_diff(fast_r, naive_r)
    row = {
        "model": name, "options": options, "parameters": sum(p.numel() for p in model.parameters()),
        "images": len(x), "batch_size": batch_size, "samples": samples, "split_at": fast_r.split_at,
        "fast_method": fast_r.method, "note": fast_r.note,
        "timing": {k: summarise_times(v, len(x)).to_dict() for k, v in times.items()},
        "plain_s": med["plain"], "fast_s": med["fast"], "naive_s": med["naive"],
        "speedup_fast_vs_naive": med["naive"] / med["fast"],
        "fast_cost_vs_plain": med["fast"] / med["plain"],
        "naive_cost_vs_plain": med["naive"] / med["plain"],
        "max_abs_diff_fast_vs_naive": diff, "equal_within_atol": diff <= ATOL,
        "metrics_untrained": mc_metrics(fast_r, labels),
    }
    row["meets_speedup_target"] = row["speedup_fast_vs_naive"] >= SPEEDUP_MIN
    row["meets_cost_target"] = row["fast_cost_vs_plain"] <= COST_MAX
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--images", type=int, default=None, help="images per model (default: per-model size)")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset("fashion_mnist_small", [])
    mean, std = InputStats(data.mean, data.std).tensors(torch.device("cpu"))
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        options, n = MODELS[name]
        n = args.images or n
        x = prepare_batch(data.test.images[:n], mean, std)
        row = bench_model(name, options, x, data.test.labels[:n], samples=args.samples,
                          batch_size=args.batch_size, rounds=args.rounds, seed=args.seed)
        rows.append(row)
        print(f"{name:>8} ({row['images']} images, N={args.samples}): plain {row['plain_s']:.3f} s  "
              f"fast {row['fast_s']:.3f} s  naive {row['naive_s']:.2f} s  speedup {row['speedup_fast_vs_naive']:.1f}x "
              f"(target >= {SPEEDUP_MIN})  fast/plain {row['fast_cost_vs_plain']:.2f}x (target <= {COST_MAX})  "
              f"max|diff| {row['max_abs_diff_fast_vs_naive']:.2e}")

    write_json(args.out, {
        "benchmark": "mc_dropout", "targets": {"speedup_min": SPEEDUP_MIN, "fast_cost_vs_plain_max": COST_MAX,
                                               "atol": ATOL},
        "data": "fashion_mnist_small test split (first images of the stratified 1000)",
        "weights": "random init (seeded); timing does not depend on them",
        "statistic": f"median wall seconds over {args.rounds} interleaved rounds (plain, fast, naive)",
        "threads": args.threads, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "machine": machine_info(), "versions": package_versions(), "results": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
