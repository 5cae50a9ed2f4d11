"""Stage: benchmark every model of a run on every runtime of a device, and write the report.

Per model x runtime: accuracy, NLL, ECE, MCE on the test split (from that runtime's own logits), size
on disk, parameters, MACs, latency at batch 1 and throughput at a larger batch (medians of many
timed runs after warm-up, with p10/p90 and a stability flag), and the teacher/student inference-time ratio
on the same runtime; each measured file's SHA-256 and export record; the KD student against its baseline
(paired bootstrap); and what to ship for the user's limits (kdedge/bench/recommend.py). Calibration (reliability diagrams, the teacher before/after T*) and MC-dropout uncertainty
(torch, and the exported MC graphs of kdedge/bench/mc_onnx.py; dropout models only) complete the report: <run>/bench/report.{json,md} + PNGs.

The test split comes from the recipe's dataset, or from a --test-data file (what `kdedge bench --host`
sends to a device that has no dataset). On --device jetson, the device facts and trtexec builds and
timings of kdedge/bench/jetson.py join the report.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdedge.bench.annotate import (file_record, flag_timings, kd_vs_baseline, runtime_versions,
                                   temperature_check, tiled)
from kdedge.bench.jetson import device_info, tegrastats_sampling, tensorrt_version_from, trtexec_models
from kdedge.bench.macs import count_macs
from kdedge.bench.mc_onnx import exported_uncertainty
from kdedge.bench.ood import load_ood, ood_report
from kdedge.bench.recommend import Limits, recommend
from kdedge.bench.report import write_markdown, write_plots
from kdedge.bench.runtimes import BenchModel, Runtime, parse_runtimes
from kdedge.bench.split_file import BenchSplit, read_split, split_from_dataset
from kdedge.bench.timing import cuda_clock, time_interleaved, wall_clock
from kdedge.errors import KdedgeError
from kdedge.inference import batched
from kdedge.inputs import normalise
from kdedge.io import replace_dir, restore_dir, write_json
from kdedge.layout import BENCH_DIR, finished_models, model_file, requested_models
from kdedge.lock import run_lock
from kdedge.metrics import calibration_bins, classification_report
from kdedge.run import RunDir, machine_info, package_versions
from kdedge.stage_model import load_stage_model
from kdedge.stages.context import StageContext
from kdedge.stages.data import recorded_data

# -2: data.test_sha256 and data.source; device_info and trtexec (jetson); host and remote_run (--host)
# -3: recommendation, kd_vs_baseline, timing_notes; per runtime entry: precision, family, file, sha256,
#     export, timing_flags (and spread in each timing); calibration.temperature_check
REPORT_SCHEMA = "kdedge-bench-report-3"


@dataclass(frozen=True)
class BenchOptions:
    device: str = "cpu"
    runtimes: str | None = None         # comma list; None = every installed runtime of the device
    models: list[str] | None = None
    batch: int = 64
    threads: int | None = 1             # one thread: stable numbers on a small shared box (README, Bench)
    rounds: int = 5
    runs: int = 20                      # timed runs per round (rounds x runs in all)
    mc_samples: int = 100              # 0 skips MC dropout
    mc_seed: int = 0
    mupe_masks: str = "independent"     # MC-dropout masks behind MUPE: independent | shared (choices.MUPE_MASKS)
    test_data: Path | None = None       # a test-split file (kdedge bench --host) instead of the dataset
    ood: str | None = None              # --ood: a dataset name or image folder (kdedge/bench/ood.py)
    limits: Limits = Limits()           # what the recommendation must meet


def exported_models(run_root: Path, requested: list[str] | None) -> tuple[RunDir, dict, dict, list[str]]:
    """(run, manifest, its exports, the models to bench); a run without exports says how to make them."""
    run = RunDir(run_root)
    manifest = run.read_manifest()
    exports = manifest.get("exports") or {}
    if not exports:
        raise KdedgeError(f"{run_root}: no exports to benchmark; run `kdedge export {run_root} --int8` first")
    return run, manifest, exports, bench_models(run, requested, exports)


def bench_run(run_root: Path, ctx: StageContext, options: BenchOptions) -> dict[str, Any]:
    with run_lock(run_root):  # one writer per run
        RunDir(run_root).read_manifest()  # a kdedge run: only then is anything in it cleaned or written
        restore_dir(Path(run_root) / BENCH_DIR)  # what a killed bench left: temp files, a half-swapped report
        new_dir = Path(tempfile.mkdtemp(prefix=f".{BENCH_DIR}-new-", dir=run_root))
        try:
            result = _bench(run_root, ctx, options, new_dir)
            replace_dir(new_dir, Path(run_root) / BENCH_DIR)  # the report set as one unit: no stale file survives
        finally:
            shutil.rmtree(new_dir, ignore_errors=True)
    return result


def _bench(run_root: Path, ctx: StageContext, options: BenchOptions, out_dir: Path) -> dict[str, Any]:
    """Measure and write the report set into `out_dir` (a fresh directory)."""
    run, manifest, exports, stages = exported_models(run_root, options.models)
    runtimes = parse_runtimes(options.runtimes, options.device)
    if options.test_data is not None:
        split = read_split(options.test_data, manifest,
                           [(e["file"], e) for s in stages for e in exports.get(s, {}).values()])
    else:
        split = dataset_split(run, manifest, ctx)[0]
    torch_device = _torch_device(options.device)
    if options.threads:
        torch.set_num_threads(options.threads)
    images = normalise(split.images.numpy(), split.stats)
    ood = None if options.ood is None else load_ood(options.ood, ctx.data_roots, channels=split.input_shape[0],
                                                     size=split.input_shape[1:], own_dataset=split.dataset)
    torch_models = {stage: load_stage_model(run, stage)[0] for stage in stages}
    jetson = options.device == "jetson"
    extras: dict[str, Any] = {}
    engines: dict[str, Path] = {}
    # on a Jetson, tegrastats samples the whole measurement: trtexec builds and timings, then ours
    with tegrastats_sampling(jetson) as sampler:
        if jetson:
            extras["device_info"] = device_info()
            extras["trtexec"], engines = trtexec_models(run.root, exports, stages, split.input_shape, options.batch,
                                                        out_dir, ctx.print)
        models, predictors, correct = _evaluate(run, exports, stages, runtimes, torch_models, split, images, engines,
                                       torch_device, options, ctx)
        _time_all(predictors, models, images, options, ctx)
    if sampler is not None:
        info = extras["device_info"]
        info["tegrastats"] = sampler.summary()
        info["tensorrt"] = tensorrt_version_from(info["tensorrt"], extras["trtexec"])
    timing_notes = flag_timings(models)
    calibration = _calibration(run, torch_models, split, torch_device)
    calibration["temperature_check"] = temperature_check(manifest)
    result = {
        "schema": REPORT_SCHEMA, "run": str(run_root), "recipe": manifest["recipe"]["name"],
        "device": options.device, "threads": options.threads or torch.get_num_threads(),
        "batch": options.batch, "timing": {"rounds": options.rounds, "runs_per_round": options.runs},
        "data": {"dataset": split.dataset, "test_images": int(len(split.labels)), "test_sha256": split.sha256,
                 "source": split.source},
        "models": models, "ratios": _ratios(models), "timing_notes": timing_notes,
        "kd_vs_baseline": kd_vs_baseline(correct), "calibration": calibration,
        "uncertainty": _uncertainty(torch_models, images, split.labels, options, torch_device, ctx),
        "uncertainty_exported": exported_uncertainty(run.root, exports, stages, images, split.labels,
                                                     threads=options.threads, batch=options.batch, rounds=options.rounds,
                                                     runs=options.runs, trtexec=extras.get("trtexec"),
                                                     bench_dir=out_dir, log=ctx.print),
        **({} if ood is None else {"ood": ood_report(
            torch_models, images, ood, split.stats, samples=options.mc_samples, seed=options.mc_seed,
            device=torch_device, run_root=run.root, exports=exports, threads=options.threads, log=ctx.print)}),
        **extras,
        "machine": machine_info(), "versions": {**package_versions(), **runtime_versions([r.name for r in runtimes])},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result["recommendation"] = recommend(result, options.limits)
    write_plots(result, out_dir)
    write_markdown(result, out_dir)
    write_json(out_dir / "report.json", result)
    return result


def dataset_split(run: RunDir, manifest: dict[str, Any], ctx: StageContext) -> tuple[BenchSplit, tuple[str, ...]]:
    """The run's test split from its dataset (and the class names), refused if the data changed."""
    data = recorded_data(manifest, run.manifest_path, ctx.data_roots)
    return split_from_dataset(data.dataset.name, data.training.test, data.training.stats), data.dataset.classes


def _torch_device(device: str) -> torch.device:
    if device == "cuda" or (device == "jetson" and torch.cuda.is_available()):
        return torch.device("cuda")  # a Jetson's torch (NVIDIA's JetPack wheel) runs on its GPU
    return torch.device("cpu")


def _evaluate(run: RunDir, exports: dict, stages: list[str], runtimes: list[Runtime], torch_models: dict,
              split: BenchSplit, images: np.ndarray, engines: dict[str, Path], torch_device: torch.device,
              options: BenchOptions, ctx: StageContext) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict]:
    """Per model: size, MACs and each runtime's metrics from its own logits; the predictors to time; and
    which test images each model x runtime got right."""
    predictors: dict[str, dict[str, Any]] = {}
    correct: dict[tuple[str, str], np.ndarray] = {}
    models: dict[str, dict[str, Any]] = {}
    for stage in stages:
        record = run.stage_record(stage) or {}
        models[stage] = {"parameters": record["parameters"], "macs": _macs(torch_models[stage], split.input_shape),
                         "train_time_s": record.get("train_time_s"), "runtimes": {}}
        model = BenchModel(stage=stage, model=torch_models[stage], weights=model_file(run, stage)[0], run_root=run.root,
                           exports=exports, engine=engines.get(stage), device=options.device,
                           torch_device=torch_device, threads=options.threads, input_shape=split.input_shape)
        for runtime in runtimes:
            predictor = runtime.predictor(model)
            if predictor is None:
                continue
            logits = batched(predictor.predict, images, options.batch)
            report = classification_report(torch.from_numpy(logits), split.labels)
            export = exports.get(stage, {}).get(runtime.export_format) if runtime.export_format else None
            models[stage]["runtimes"][runtime.name] = {
                **report, "size_bytes": predictor.file.stat().st_size, "precision": runtime.precision,
                "family": runtime.family, **file_record(run.root, predictor.file, export), **predictor.report}
            correct[(stage, runtime.name)] = logits.argmax(1) == split.labels.numpy()
            predictors.setdefault(runtime.name, {})[stage] = predictor.predict
            ctx.print(f"[cyan]{stage}[/] {runtime.name}: accuracy {report['accuracy']:.4f}, ECE {report['ece']:.4f}")
    return models, predictors, correct


def _macs(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> int | None:
    # torch cannot count what runs in ONNX Runtime (a teacher given as an ONNX file)
    return count_macs(model, input_shape) if getattr(model, "runs_in_torch", True) else None


def bench_models(run: RunDir, requested: list[str] | None, exports: dict) -> list[str]:
    if requested is None:
        return [s for s in finished_models(run) if s in exports]
    return requested_models(run, requested)


def _time_all(predictors: dict[str, dict[str, Any]], models: dict, images: np.ndarray, options: BenchOptions,
              ctx: StageContext) -> None:
    """Per runtime, the models are timed interleaved, so their ratio is not skewed by machine drift."""
    sizes = sorted({1, options.batch, options.limits.budget_batch})  # the budget's batch size is timed too
    for runtime, by_stage in predictors.items():
        # torch and TensorRT queue their work on torch's CUDA stream: timed by CUDA events there
        on_stream = runtime in ("torch", "trt") and _torch_device(options.device).type == "cuda"
        clock = cuda_clock() if on_stream else wall_clock
        for label, batch in ((f"batch{b}", b) for b in sizes):
            x = tiled(images, batch)
            calls = {stage: (lambda p=p, x=x: p(x)) for stage, p in by_stage.items()}
            timings = time_interleaved(calls, batch=batch, rounds=options.rounds, runs=options.runs,
                                       warmup=max(5, options.runs // 2), clock=clock)
            for stage, t in timings.items():
                models[stage]["runtimes"][runtime][label] = t.to_dict()
        ctx.print(f"[green]timed[/] {runtime}: " + ", ".join(
            f"{s} {models[s]['runtimes'][runtime]['batch1']['median_ms']:.3f} ms" for s in by_stage))


def _ratios(models: dict) -> dict[str, Any]:
    """teacher time / student time on the same runtime (and across runtimes against the fp32 teacher)."""
    if "teacher" not in models:
        return {}
    out: dict[str, Any] = {}
    teacher = models["teacher"]["runtimes"]
    for stage, info in models.items():
        if stage == "teacher":
            continue
        for runtime, r in info["runtimes"].items():
            for label in (k for k in r if k.startswith("batch")):
                if runtime in teacher and label in teacher[runtime]:
                    out.setdefault(stage, {}).setdefault(runtime, {})[label] = (
                        teacher[runtime][label]["median_ms"] / r[label]["median_ms"])
    return out


def _calibration(run: RunDir, torch_models: dict, split: BenchSplit, device: torch.device) -> dict[str, Any]:
    """Reliability bins of each model's fp32 torch predictions, and the teacher before/after T*."""
    from kdedge.inference import predict_logits

    bins = {}
    for stage, model in torch_models.items():
        logits = predict_logits(model, split.image_data, split.stats, batch_size=256, device=device)
        bins[stage] = calibration_bins(torch.softmax(logits.double(), 1), split.labels).to_dict()
        if stage == "teacher":
            teacher_logits = logits
    t = run.read_manifest().get("temperatures", {}).get("teacher")
    scaled = None
    if t is not None and "teacher" in torch_models:
        scaled = calibration_bins(torch.softmax(teacher_logits.double() / t, 1), split.labels).to_dict()
    return {"bins": bins, "teacher_temperature": t, "teacher_bins_at_temperature": scaled}


def _uncertainty(torch_models: dict, images: np.ndarray, labels: torch.Tensor, options: BenchOptions,
                 device: torch.device, ctx: StageContext) -> dict[str, Any]:
    """MC dropout on the torch models (ONNX and TensorRT run dropout as identity), and MUPE of each
    student against the teacher. A model without dropout is reported as such."""
    from kdedge.uncertainty.compare import compare_mc_dropout

    if options.mc_samples <= 0:
        return {"skipped": "--mc-samples 0"}
    return compare_mc_dropout(torch_models, torch.from_numpy(images), labels, samples=options.mc_samples,
                              seed=options.mc_seed, device=device, masks=options.mupe_masks,
                              log=ctx.print)


def limit_args(limits: Limits) -> list[str]:
    """The recommendation's limits as `kdedge bench` options (what --host passes to the device)."""
    args = ["--max-drop", repr(limits.max_drop), "--budget-batch", str(limits.budget_batch)]
    if limits.max_ece is not None:
        args += ["--max-ece", repr(limits.max_ece)]
    if limits.budget_ms is not None:
        args += ["--budget-ms", repr(limits.budget_ms)]
    return args
