"""The GPU path, measured: ONE script to run when a CUDA GPU is lent (under 8 minutes on an H200).

On kdedge's own ResNet-20 and MobileNetV2 students (CIFAR-shaped synthetic data: 3x32x32, 10 classes,
uint8 in host memory as kdedge keeps a dataset):

1. training images/s through kdedge's loop (`kdedge.train.fit`, epoch 2: epoch 1 warms up kernels,
   cuDNN autotuning and compilation) in fp32, AMP (bf16 where the GPU has it, else fp16), AMP +
   channels_last, AMP + channels_last + torch.compile;
2. kdedge's loop against a bare hand-written AMP loop doing the same work (same model, optimizer, batch,
   data in host memory copied per batch), interleaved, median of the repeats (goal: >= 0.95x); a bare
   loop with the whole set already on the GPU is reported too, as the ceiling;
3. MC dropout with N=100 passes (kdedge's fast path, and the naive loop) against one deterministic pass
   over the same images on the GPU (goal: <= 5x);
4. torch CUDA latency at batch 1 and 64: the predictor `kdedge bench` times (numpy in, numpy out) and
   the model's forward alone on device tensors (fp32 and AMP + channels_last), timed by CUDA events.

Writes bench/results/gpu_check.json and .md (after each part, so a run cut short keeps what it
measured). Without a CUDA GPU it says so, exits 0 and writes nothing. `--cpu-smoke` runs every part
on the CPU at tiny sizes (bf16 autocast on the CPU, no compile) to check the script itself; it writes
to bench/results/gpu_check_cpu_smoke.json unless --out is given.

    python bench/gpu_check.py                  # on a GPU machine
    python bench/gpu_check.py --skip-compile   # without the torch.compile configuration
    python bench/gpu_check.py --cpu-smoke      # the script's own check, on the CPU
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdedge.bench.runtimes import torch_predictor
from kdedge.bench.timing import cuda_clock, time_interleaved, wall_clock
from kdedge.data.base import ImageData
from kdedge.data.training import TrainingData
from kdedge.inference import batched
from kdedge.inputs import InputStats
from kdedge.io import write_result
from kdedge.models import build_model
from kdedge.recipe import TrainConfig
from kdedge.run import machine_info, package_versions
from kdedge.train import fit, supervised_step
from kdedge.train.precision import AUTOCAST_DTYPES, resolve_precision
from kdedge.uncertainty.mc_dropout import mc_dropout_predict

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"resnet20": {"dropout": 0.2}, "mobilenet_v2": {"dropout": 0.2}}
LOOP_TARGET, MC_TARGET = 0.95, 5.0
GPU = {"batch": 256, "steps": 120, "eval": 1024, "repeats": 5, "mc_images": 10_000, "mc_samples": 100,
       "latency_rounds": 5, "latency_runs": 40, "latency_warmup": 10}
SMOKE = {"batch": 16, "steps": 3, "eval": 32, "repeats": 1, "mc_images": 32, "mc_samples": 100,
         "latency_rounds": 1, "latency_runs": 2, "latency_warmup": 1}
STATS = InputStats((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def synthetic(n: int, seed: int) -> ImageData:
    gen = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                     torch.randint(0, 10, (n,), generator=gen))


def make_model(name: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels=3, num_classes=10, image_size=32, **MODELS[name]).to(device)


def train_cfg(size: dict, **kw: Any) -> TrainConfig:
    return TrainConfig(epochs=kw.pop("epochs", 2), batch_size=size["batch"], eval_batch_size=size["eval"],
                       augment=False, schedule={"name": "constant"},
                       optimizer={"name": "sgd", "lr": 0.01}, **kw)


def kdedge_images_per_s(name: str, data: TrainingData, cfg: TrainConfig, device: torch.device) -> dict:
    model = make_model(name, device)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, supervised_step(model), data=data, cfg=cfg, seed=0, device=device,
                     out_dir=Path(tmp), fingerprint="gpu_check")
    last = result.history[-1]
    return {"images_per_s": last["train_images_per_s"], "epoch_time_s": last["epoch_time_s"],
            "first_epoch_time_s": result.history[0]["epoch_time_s"], "precision": result.precision,
            "compiled": result.compiled}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_amp_images_per_s(name: str, data: TrainingData, cfg: TrainConfig, device: torch.device,
                          precision: str, *, resident: bool = False) -> float:
    """The loop a person writes by hand: shuffle, index, copy (pinned), normalise, AMP forward, backward, step."""
    model = make_model(name, device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    images, labels = data.train.images, data.train.labels
    if resident:
        images, labels = images.to(device), labels.to(device)
    mean, std = (t.view(1, 3, 1, 1) for t in STATS.tensors(device))
    n = len(labels)
    sync(device)
    t0 = time.perf_counter()
    perm = torch.randperm(n, device=images.device)
    for start in range(0, n, cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        xb, yb = images[idx], labels[idx]
        if device.type == "cuda" and not resident:
            xb = xb.pin_memory()
        x = ((xb.to(device, non_blocking=True).float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        y = yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    sync(device)
    return n / (time.perf_counter() - t0)


def part_precision(data, size, device, amp, earlier: list[dict] | None = None) -> list[dict]:
    """Without `earlier`: fp32, AMP, AMP + channels_last; with it (the rows so far, which hold the fp32
    baselines): those rows plus AMP + channels_last + compile (last, as it takes the longest)."""
    if earlier is None:
        configs = {"fp32": dict(precision="fp32", channels_last=False), amp: dict(precision=amp, channels_last=False),
                   f"{amp}+channels_last": dict(precision=amp, channels_last=True)}
    else:
        configs = {f"{amp}+channels_last+compile": dict(precision=amp, channels_last=True, compile=True)}
    rows = list(earlier or [])
    for name in MODELS:
        for label, kw in configs.items():
            row = {"model": name, "config": label, **kdedge_images_per_s(name, data, train_cfg(size, **kw), device)}
            rows.append(row)
            print(f"  {name:>12} {label:<28} {row['images_per_s']:>10,.0f} img/s (first epoch {row['first_epoch_time_s']:.1f}s)")
        base = next(r["images_per_s"] for r in rows if r["model"] == name and r["config"] == "fp32")
        for r in rows:
            if r["model"] == name:
                r["speedup_vs_fp32"] = r["images_per_s"] / base
    return rows


def part_loop(data, size, device, amp) -> dict:
    name, cfg = "resnet20", train_cfg(size, epochs=1, precision=amp, channels_last=True)
    kdedge_images_per_s(name, data, cfg, device), bare_amp_images_per_s(name, data, cfg, device, amp)  # warm-up
    ours, bare, resident = [], [], []
    for _ in range(size["repeats"]):  # interleaved: drift hits both alike
        ours.append(kdedge_images_per_s(name, data, cfg, device)["images_per_s"])
        bare.append(bare_amp_images_per_s(name, data, cfg, device, amp))
        resident.append(bare_amp_images_per_s(name, data, cfg, device, amp, resident=True))
    out = {"model": name, "config": f"{amp}+channels_last", "batch_size": cfg.batch_size,
           "images_per_epoch": len(data.train), "kdedge_images_per_s": statistics.median(ours),
           "bare_images_per_s": statistics.median(bare), "bare_gpu_resident_images_per_s": statistics.median(resident),
           "kdedge_runs": ours, "bare_runs": bare, "target": LOOP_TARGET}
    out["ratio"] = out["kdedge_images_per_s"] / out["bare_images_per_s"]
    out["meets_target"] = out["ratio"] >= LOOP_TARGET
    print(f"  kdedge {out['kdedge_images_per_s']:,.0f} img/s, bare {out['bare_images_per_s']:,.0f} img/s: "
          f"ratio {out['ratio']:.3f} (goal >= {LOOP_TARGET}); data already on the device: "
          f"{out['bare_gpu_resident_images_per_s']:,.0f} img/s")
    return out


def _seconds(fn, device, repeats: int = 3, warm: bool = True) -> float:
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def part_mc(size, device) -> list[dict]:
    rows = []
    x = ((synthetic(size["mc_images"], 2).images.float() / 255 - 0.5) / 0.25).to(device)
    for name in MODELS:
        model = make_model(name, device).to(memory_format=torch.channels_last).eval()
        x_cl = x.contiguous(memory_format=torch.channels_last)

        @torch.inference_mode()  # (the naive timing below runs under mc_dropout_predict's own inference mode)
        def one_pass():
            return batched(lambda b: torch.softmax(model(b).float(), 1).cpu(), x_cl, 256)

        n = size["mc_samples"]
        one = _seconds(one_pass, device)
        fast = _seconds(lambda: mc_dropout_predict(model, x, samples=n, batch_size=256), device)
        # the naive loop (N full forward passes) on a tenth of the images, against one pass over the same tenth
        sub = x[:max(1, len(x) // 10)]
        one_sub = _seconds(lambda: batched(lambda b: torch.softmax(model(b).float(), 1).cpu(),
                                           sub.contiguous(memory_format=torch.channels_last), 256), device)
        naive = _seconds(lambda: mc_dropout_predict(model, sub, samples=n, batch_size=256, fast=False), device,
                         1, warm=False)
        method = mc_dropout_predict(model, x[:2], samples=2).method
        row = {"model": name, "images": len(x), "samples": n, "one_pass_s": one, "mc_fast_s": fast,
               "fast_method": method, "ratio_fast": fast / one, "naive_images": len(sub), "mc_naive_s": naive,
               "ratio_naive": naive / one_sub, "target": MC_TARGET, "meets_target": fast / one <= MC_TARGET}
        rows.append(row)
        print(f"  {name:>12}: one pass {one * 1000:.1f} ms, MC x{n} {fast * 1000:.1f} ms ({method}; "
              f"{row['ratio_fast']:.2f}x, goal <= {MC_TARGET}), naive {row['ratio_naive']:.1f}x")
    return rows


def part_latency(size, device, amp) -> list[dict]:
    models = {name: make_model(name, device).eval() for name in MODELS}
    models_cl = {name: copy.deepcopy(m).to(memory_format=torch.channels_last) for name, m in models.items()}
    clock = cuda_clock(device) if device.type == "cuda" else wall_clock
    rows = []
    for batch in (1, 64):
        x = ((synthetic(batch, 3).images.float() / 255 - 0.5) / 0.25).numpy()
        xd = torch.from_numpy(x).to(device)
        xd_cl = xd.contiguous(memory_format=torch.channels_last)
        calls = {}
        for name, model in models.items():
            calls[(name, "bench_predictor_fp32")] = (lambda p=torch_predictor(model, device): p(x))
            calls[(name, "forward_fp32")] = (lambda m=model: _forward(m, xd, "fp32", device))
            calls[(name, f"forward_{amp}+channels_last")] = (lambda m=models_cl[name]: _forward(m, xd_cl, amp, device))
        keyed = {f"{n}|{k}": fn for (n, k), fn in calls.items()}
        timings = time_interleaved(keyed, batch=batch, rounds=size["latency_rounds"], runs=size["latency_runs"],
                                   warmup=size["latency_warmup"], clock=clock)
        for key, t in timings.items():
            name, kind = key.split("|")
            rows.append({"model": name, "what": kind, "batch": batch, **t.to_dict()})
            print(f"  {name:>12} batch {batch:>2} {kind:<28} median {t.median_ms:.3f} ms  p90 {t.p90_ms:.3f} ms")
    return rows


@torch.inference_mode()
def _forward(model, x, precision, device):
    if precision == "fp32":
        return model(x)
    with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]):
        return model(x)


def markdown(result: dict) -> str:
    lines = [f"# GPU check ({result['device_name']})", "", "## Training images/s (kdedge loop, epoch 2)", "",
             "| model | config | img/s | vs fp32 | first epoch s |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['config']} | {r['images_per_s']:,.0f} | {r['speedup_vs_fp32']:.2f}x | "
              f"{r['first_epoch_time_s']:.1f} |" for r in result.get("training", [])]
    if "loop_vs_bare" in result:
        r = result["loop_vs_bare"]
        lines += ["", "## kdedge loop vs a bare AMP loop", "", f"{r['model']} {r['config']}: kdedge "
                  f"{r['kdedge_images_per_s']:,.0f} img/s, bare {r['bare_images_per_s']:,.0f} img/s, ratio "
                  f"**{r['ratio']:.3f}** (goal >= {LOOP_TARGET}); bare with the data already on the device: "
                  f"{r['bare_gpu_resident_images_per_s']:,.0f} img/s."]
    if "mc_dropout" in result:
        lines += ["", "## MC dropout vs one pass", "", "| model | images | N | one pass ms | MC fast ms | ratio | naive ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['images']} | {r['samples']} | {r['one_pass_s'] * 1000:.1f} | "
                  f"{r['mc_fast_s'] * 1000:.1f} | {r['ratio_fast']:.2f}x | {r['ratio_naive']:.1f}x |"
                  for r in result["mc_dropout"]]
    if "latency" in result:
        lines += ["", f"## Latency ({result['clock']})", "", "| model | what | batch | median ms | p90 ms | img/s |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['what']} | {r['batch']} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | "
                  f"{r['images_per_s']:,.0f} |" for r in result["latency"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile configuration")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU visible to torch {torch.__version__}: nothing measured, nothing written "
              "(run it on a GPU machine, or --cpu-smoke to check the script here)")
        return 0
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    size = SMOKE if args.cpu_smoke else GPU
    out = args.out or RESULTS / ("gpu_check_cpu_smoke.json" if args.cpu_smoke else "gpu_check.json")
    amp = "bf16" if args.cpu_smoke else resolve_precision("auto", device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as kdedge's loop sets it without train.deterministic
    n = size["batch"] * size["steps"]
    data = TrainingData(synthetic(n, 0), synthetic(size["eval"], 1), synthetic(size["eval"], 1), STATS, hflip_ok=True)
    result: dict[str, Any] = {
        "benchmark": "gpu_check", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke test)",
        "amp_precision": amp, "sizes": size, "data": "synthetic uint8 3x32x32, 10 classes, in host memory",
        "clock": "CUDA events" if device.type == "cuda" else "perf_counter",
        # torch's defaults, not changed here: fp32 convolutions may use TF32 on Ampere and newer
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "machine": machine_info(), "versions": package_versions(), "torch_cuda": torch.version.cuda}
    t_start = time.perf_counter()
    parts = [("training", "training images/s: fp32 / AMP / AMP + channels_last",
              lambda: part_precision(data, size, device, amp)),
             ("loop_vs_bare", "kdedge loop vs bare AMP loop", lambda: part_loop(data, size, device, amp)),
             ("mc_dropout", "MC dropout N=100 vs one pass", lambda: part_mc(size, device)),
             ("latency", "torch latency at batch 1 and 64", lambda: part_latency(size, device, amp))]
    if not (args.skip_compile or args.cpu_smoke):  # inductor compiles for minutes on a CPU
        parts.append(("training", "training images/s: AMP + channels_last + torch.compile",
                      lambda: part_precision(data, size, device, amp, result["training"])))
    for key, title, run in parts:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {title}", flush=True)
        result[key] = run()
        result["elapsed_s"] = time.perf_counter() - t_start
        write_result(out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
