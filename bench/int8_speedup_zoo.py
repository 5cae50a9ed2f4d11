"""INT8 vs fp32 on ONNX Runtime and OpenVINO for the zoo's edge students (`int8_speedup.py --zoo`).

Per model: build it (1 input channel, the small-input stem), train it briefly on the embedded Fashion-MNIST
training images upsampled to 32x32 (bilinear), so activations have the ranges of a trained net; export the
fp32 ONNX (MobileOne in its re-parameterised deploy form) and the ORT static QDQ INT8 (kdedge's own
quantiser and settings, calibrated on training images); measure accuracy, ECE and top-1 agreement with
ORT fp32 of the four variants on the 1,000 test images; time them at batch 1 and batch 64, one thread,
interleaved rounds (kdedge.bench.timing), medians. "Recommended" is what kdedge/bench/recommend.py picks
among the four within 1 pt of the model's own ORT fp32 accuracy (the model enters a report-shaped dict
as the reference, stage "teacher", since the limit is relative to a teacher's fp32).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from kdedge.bench.macs import count_macs
from kdedge.bench.openvino_runtime import OpenVinoPredictor, openvino_version
from kdedge.bench.recommend import Limits, recommend
from kdedge.bench.timing import time_interleaved
from kdedge.data.fashion_mnist_small import fashion_mnist_small
from kdedge.export.onnx_fp32 import INPUT_NAME, export_onnx
from kdedge.export.ort_int8 import quantize_static_qdq
from kdedge.export.ort_session import open_session
from kdedge.metrics.report import classification_report
from kdedge.models import build_model, deploy_form
from kdedge.run import machine_info, package_versions

# the edge students of issue 15; the three largest only with --all (each would take minutes here)
DEFAULT_MODELS = ("mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
                  "efficientnet_lite0", "resnet18", "mobileone_s0")
LARGE_MODELS = ("mobilenet_v3_large", "resnet34", "resnet50")
VARIANTS = ("ort", "ort-int8", "openvino", "openvino-int8")  # kdedge bench's runtime names
GOAL_MODELS, GOAL_SPEEDUP, MAX_DROP_PT = ("resnet18", "efficientnet_lite0"), 2.0, 1.0


def load_data(size: int) -> dict[str, torch.Tensor]:
    """Normalised float images [N, 1, size, size] (bilinear upsampling after normalisation) and labels."""
    splits = fashion_mnist_small(())
    mean, std = torch.tensor(splits.mean).view(1, -1, 1, 1), torch.tensor(splits.std).view(1, -1, 1, 1)

    def prep(images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255 - mean) / std
        return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    return {"train_x": prep(splits.train.images), "train_y": splits.train.labels,
            "test_x": prep(splits.test.images), "test_y": splits.test.labels}


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch: int, lr: float,
          seed: int) -> dict[str, Any]:
    """A plain SGD loop (momentum 0.9, cosine decay, random horizontal flips): enough for realistic ranges."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    order, pos, losses, t0 = torch.randperm(len(x), generator=gen), 0, [], time.perf_counter()
    for _ in range(steps):
        if pos + batch > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch]
        pos += batch
        xb = x[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return {"steps": steps, "batch": batch, "lr": lr, "seconds": time.perf_counter() - t0,
            "loss_first10": float(np.mean(losses[:10])), "loss_last10": float(np.mean(losses[-10:]))}


def predictors(fp32: Path, int8: Path, shape: tuple[int, ...], threads: int) -> dict[str, Callable]:
    """{variant: normalised float32 batch -> logits}, each on `threads` threads."""
    out: dict[str, Callable] = {}
    for name, path in (("ort", fp32), ("ort-int8", int8)):
        session = open_session(path, threads=threads)
        out[name] = lambda x, s=session: s.run(None, {INPUT_NAME: x})[0]
    for name, path in (("openvino", fp32), ("openvino-int8", int8)):
        out[name] = OpenVinoPredictor(path, threads=threads, input_shape=shape)
    return out


def evaluate(preds: dict[str, Callable], x: np.ndarray, y: torch.Tensor, batch: int = 100) -> dict[str, dict]:
    logits = {k: np.concatenate([p(np.ascontiguousarray(x[i:i + batch])) for i in range(0, len(x), batch)])
              for k, p in preds.items()}
    ref = logits["ort"].argmax(1)
    return {k: {**{m: classification_report(torch.from_numpy(v), y)[m] for m in ("accuracy", "ece")},
                "agreement_with_ort_fp32": float((v.argmax(1) == ref).mean())} for k, v in logits.items()}


def recommended(variants: dict[str, dict], batch: int) -> dict[str, Any]:
    """What recommend() ships among the four variants at `batch`, with its speedups."""
    runtimes = {k: {**v, "precision": "int8" if k.endswith("-int8") else "fp32", "family": k.removesuffix("-int8")}
                for k, v in variants.items()}
    rec = recommend({"models": {"teacher": {"runtimes": runtimes}}}, Limits(max_drop=MAX_DROP_PT, budget_batch=batch))
    choice = rec["choice"]
    ms = {k: v[f"batch{batch}"]["median_ms"] for k, v in variants.items()}
    runtime = choice["runtime"]
    own_fp32 = runtime.removesuffix("-int8")
    return {"runtime": runtime, "median_ms": ms[runtime], "speedup_vs_ort_fp32": ms["ort"] / ms[runtime],
            "speedup_vs_own_fp32": ms[own_fp32] / ms[runtime],
            "speedup_vs_fastest_fp32": min(ms["ort"], ms["openvino"]) / ms[runtime],
            "int8_slower_than_its_fp32": runtime.endswith("-int8") and ms[runtime] > ms[own_fp32],
            "runner_up": rec["runner_up"]["runtime"] if rec["runner_up"] else None,
            "notes": rec["notes"], "meeting": rec["meeting"]}


def measure(name: str, data: dict[str, torch.Tensor], args, workdir: Path) -> dict[str, Any]:
    size = data["train_x"].shape[-1]
    torch.manual_seed(args.seed)
    model = build_model(name, in_channels=1, num_classes=10, image_size=size, stem="small")
    torch.set_num_threads(args.train_threads)
    training = train(model, data["train_x"], data["train_y"], steps=args.steps, batch=64, lr=args.lr, seed=args.seed)
    deployed = deploy_form(model).eval()
    with torch.no_grad():
        torch_acc = float((deployed(data["test_x"]).argmax(1) == data["test_y"]).float().mean())
    fp32, int8 = workdir / f"{name}.onnx", workdir / f"{name}.int8.onnx"
    export_onnx(deployed, data["test_x"][:1], fp32)
    gen = torch.Generator().manual_seed(args.seed + 1)
    calib = data["train_x"][torch.randperm(len(data["train_x"]), generator=gen)[:args.calib_images]].numpy()
    t0 = time.perf_counter()
    quantize_static_qdq(fp32, int8, np.ascontiguousarray(calib), method="minmax", input_name=INPUT_NAME)
    quant_s = time.perf_counter() - t0
    preds = predictors(fp32, int8, (1, size, size), args.threads)
    test_x = data["test_x"].numpy()
    variants = evaluate(preds, test_x, data["test_y"])
    for v, path in (("ort", fp32), ("ort-int8", int8), ("openvino", fp32), ("openvino-int8", int8)):
        variants[v]["size_bytes"] = path.stat().st_size
    for batch, rounds, runs, warmup in ((1, args.rounds, args.runs, 10), (64, args.rounds64, args.runs64, 2)):
        x = np.ascontiguousarray(test_x[:batch])
        calls = {k: (lambda p=p, x=x: p(x)) for k, p in preds.items()}
        for k, t in time_interleaved(calls, batch=batch, rounds=rounds, runs=runs, warmup=warmup).items():
            variants[k][f"batch{batch}"] = t.to_dict()
    out = {"parameters": sum(p.numel() for p in deployed.parameters()),
           "parameters_train_form": sum(p.numel() for p in model.parameters()),
           "macs": count_macs(deployed, (1, size, size)), "torch_accuracy": torch_acc, "training": training,
           "quantize_s": quant_s, "variants": variants, "load_after": os.getloadavg()}
    for batch in (1, 64):
        ms = {k: v[f"batch{batch}"]["median_ms"] for k, v in variants.items()}
        out[f"int8_speedup_batch{batch}"] = {"ort": ms["ort"] / ms["ort-int8"],
                                             "openvino": ms["openvino"] / ms["openvino-int8"]}
        out[f"recommended_batch{batch}"] = recommended(variants, batch)
    return out


def verdict(models: dict[str, dict]) -> dict[str, Any]:
    """The acceptance goal, checked on the numbers: >= 2x over fp32 for the recommended runtime on ResNet-18
    and EfficientNet-Lite0 (against ORT fp32, the baseline, and against the fastest fp32), and no INT8 pick
    slower than its own fp32."""
    out: dict[str, Any] = {"speedup_goal": GOAL_SPEEDUP, "goal_models": list(GOAL_MODELS)}
    for batch in (1, 64):
        key = f"recommended_batch{batch}"
        checked = {m: models[m][key] for m in GOAL_MODELS if m in models}
        out[f"batch{batch}"] = {
            "speedups_vs_ort_fp32": {m: r["speedup_vs_ort_fp32"] for m, r in checked.items()},
            "speedups_vs_fastest_fp32": {m: r["speedup_vs_fastest_fp32"] for m, r in checked.items()},
            # None: a goal model was not measured (a --models list without it)
            "met_vs_ort_fp32": None if len(checked) < len(GOAL_MODELS)
            else all(r["speedup_vs_ort_fp32"] >= GOAL_SPEEDUP for r in checked.values()),
            "met_vs_fastest_fp32": None if len(checked) < len(GOAL_MODELS)
            else all(r["speedup_vs_fastest_fp32"] >= GOAL_SPEEDUP for r in checked.values()),
            "int8_pick_slower_than_its_fp32": [m for m, r in models.items() if r[key]["int8_slower_than_its_fp32"]]}
    return out


def run(args, partial: Callable[[dict[str, Any]], None] = lambda result: None) -> dict[str, Any]:
    """`partial` gets the result so far after each model (a cut-short run keeps what it measured)."""
    names = list(args.models or (DEFAULT_MODELS + LARGE_MODELS if args.all else DEFAULT_MODELS))
    unknown = [n for n in names if n not in DEFAULT_MODELS + LARGE_MODELS]
    if unknown:  # before minutes of training, not after
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(DEFAULT_MODELS + LARGE_MODELS)}")
    result: dict[str, Any] = {
        "what": "INT8 vs fp32 on ORT and OpenVINO, edge students briefly trained on embedded Fashion-MNIST",
        "input": f"1x{args.size}x{args.size} (28x28 Fashion-MNIST, bilinear upsampling)" if args.size != 28
        else "1x28x28", "threads": args.threads, "train_threads": args.train_threads,
        "timing": {"batch1": {"rounds": args.rounds, "runs": args.runs, "warmup": 10},
                   "batch64": {"rounds": args.rounds64, "runs": args.runs64, "warmup": 2}},
        "calibration": {"images": args.calib_images, "method": "minmax", "form": "QDQ, per-channel S8 weights "
                        "(reduce_range), U8 activations (kdedge.export.ort_int8)"},
        "limits": {"max_drop_pt": MAX_DROP_PT, "reference": "the model's own ORT fp32 accuracy"},
        "machine": machine_info(), "versions": {**package_versions(), "openvino": openvino_version()},
        "load_before": os.getloadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": {}}
    data = load_data(args.size)
    with tempfile.TemporaryDirectory(prefix="kdedge-zoo-") as tmp, Progress() as progress:
        task = progress.add_task("models", total=len(names))
        for name in names:
            progress.update(task, description=f"{name}")
            result["models"][name] = measure(name, data, args, Path(tmp))
            partial(result)
            progress.advance(task)
    result.update(load_after=os.getloadavg(), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  goal=verdict(result["models"]))
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    vnni = [f for f in m["simd"] if "vnni" in f or f.startswith("amx")]
    lines = [f"# INT8 vs fp32 on ORT and OpenVINO, edge students, input {r['input']}", "",
             f"CPU: {m['cpu']}, {m['logical_cores']} logical cores; SIMD flags: {', '.join(m['simd'])} "
             f"(INT8 dot products: {', '.join(vnni) or 'none: AVX2 only'}). {r['threads']} inference thread; "
             f"onnxruntime {r['versions']['onnxruntime']}, openvino {r['versions']['openvino']}, "
             f"torch {r['versions']['torch']}. Load average before {_load(r['load_before'])}, after "
             f"{_load(r['load_after'])}. Timing: interleaved rounds, medians; batch 1 "
             f"{r['timing']['batch1']['rounds']}×{r['timing']['batch1']['runs']} runs, batch 64 "
             f"{r['timing']['batch64']['rounds']}×{r['timing']['batch64']['runs']} runs per variant.", "",
             "Each model: 1 input channel, small-input stem, trained "
             f"{next(iter(r['models'].values()))['training']['steps'] if r['models'] else 0} SGD steps of 64 on the "
             "4,000 embedded training images; INT8 = ORT static QDQ (kdedge.export.ort_int8, minmax, "
             f"{r['calibration']['images']} training images); accuracy on the 1,000 test images. Recommended = "
             f"kdedge.bench.recommend over the four variants, within {r['limits']['max_drop_pt']:g} pt of the "
             "model's own ORT fp32.", ""]
    lines += _verdict_lines(r)
    if vnni:  # the goal names an AVX2 CPU; say plainly when this one is not
        lines.append(f"- This CPU reports {', '.join(vnni)}: ORT and OpenVINO use one-instruction u8×s8 dot products "
                     "here, so these INT8 speedups do not carry over to an AVX2-only CPU (not measured here).")
    worst = max(r["load_before"][0], r["load_after"][0])
    if worst > r["machine"]["logical_cores"]:  # interleaving keeps ratios fair; absolute times suffer
        lines.append(f"- The machine was shared (1-min load average up to {worst:.1f} on {r['machine']['logical_cores']} "
                     "cores): ratios come from interleaved rounds; absolute times are slower than on a quiet machine.")
    minutes = sum(x["training"]["seconds"] for x in r["models"].values()) / 60
    lines.append(f"- Training took {minutes:.0f} min in all; models whose fp32 accuracy is low are undertrained, "
                 "and their INT8 agreement is lower (more low-margin predictions flip).")
    lines += ["", "| model | params | MACs | acc fp32 / INT8 (ORT) | agree INT8 ORT / OV | ms b1: ORT fp32 · INT8 · "
              "OV fp32 · INT8 | img/s b64: ORT fp32 · INT8 · OV fp32 · INT8 | INT8 speedup ORT b1 / b64 | "
              "INT8 speedup OV b1 / b64 | recommended b1 (× ORT fp32) | recommended b64 (× ORT fp32) |",
              "|---|---:|---:|---|---|---|---|---|---|---|---|"]
    for name, x in r["models"].items():
        v = x["variants"]
        ms = " · ".join(f"{v[k]['batch1']['median_ms']:.3f}" for k in VARIANTS)
        ips = " · ".join(f"{v[k]['batch64']['images_per_s']:,.0f}" for k in VARIANTS)
        s1, s64 = x["int8_speedup_batch1"], x["int8_speedup_batch64"]
        rec = [f"{x[f'recommended_batch{b}']['runtime']} ({x[f'recommended_batch{b}']['speedup_vs_ort_fp32']:.2f}×)"
               for b in (1, 64)]
        lines.append(f"| {name} | {x['parameters'] / 1e6:.2f} M | {x['macs'] / 1e6:.1f} M | "
                     f"{v['ort']['accuracy'] * 100:.1f} / {v['ort-int8']['accuracy'] * 100:.1f} | "
                     f"{v['ort-int8']['agreement_with_ort_fp32'] * 100:.1f} / "
                     f"{v['openvino-int8']['agreement_with_ort_fp32'] * 100:.1f} % | {ms} | {ips} | "
                     f"{s1['ort']:.2f}× / {s64['ort']:.2f}× | {s1['openvino']:.2f}× / {s64['openvino']:.2f}× | "
                     f"{rec[0]} | {rec[1]} |")
    lines += ["", "Accuracy of OpenVINO from its own logits: " + "; ".join(
        f"{n} {x['variants']['openvino']['accuracy'] * 100:.1f} / {x['variants']['openvino-int8']['accuracy'] * 100:.1f}"
        for n, x in r["models"].items()) + ".", "",
        "Timing spread (p90/median, worst of the four variants) b1 / b64: " + "; ".join(
        f"{n} {max(v['batch1']['spread'] for v in x['variants'].values()):.2f} / "
        f"{max(v['batch64']['spread'] for v in x['variants'].values()):.2f}" for n, x in r["models"].items()) + ".",
        "", "Reproduce: `python bench/int8_speedup.py --zoo` (see `--help`)."]
    return "\n".join(lines) + "\n"


def _load(avg: tuple[float, ...]) -> str:
    return " / ".join(f"{a:.2f}" for a in avg) + " (1/5/15 min)"


def _verdict_lines(r: dict[str, Any]) -> list[str]:
    g, out = r["goal"], []
    for b in (1, 64):
        x = g[f"batch{b}"]
        nums = ", ".join(f"{m} {x['speedups_vs_ort_fp32'][m]:.2f}× (vs fastest fp32 {x['speedups_vs_fastest_fp32'][m]:.2f}×)"
                         for m in x["speedups_vs_ort_fp32"])
        met = {True: "met", False: "**not met**", None: "not measured"}[x["met_vs_ort_fp32"]]
        slower = x["int8_pick_slower_than_its_fp32"]
        out.append(f"- Batch {b}: recommended runtime ≥ {g['speedup_goal']:g}× over ORT fp32 on "
                   f"{' and '.join(g['goal_models'])}: {met} ({nums or 'ResNet-18 or EfficientNet-Lite0 left out'}); an INT8 pick slower than "
                   f"its own fp32: {', '.join(slower) if slower else 'none'}.")
    return out
