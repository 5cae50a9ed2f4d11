"""INT8 that survives: when an INT8 artifact fails the parity gate, keep its most sensitive layers in fp32.

Sensitivity is measured one layer at a time: the model with only layer L quantized (everything else
fp32), its logits' relative squared error against the fp32 logits, sum((q - f)^2) / sum(f^2). That
costs one quantization and one forward pass per layer (with ONNX Runtime's calibration computed once
and reused), ranks layers on a continuous scale (agreement on a few hundred images ties most of them),
and is the standard analysis (ORT's qdq_loss_debug, NVIDIA's per-layer sensitivity). The leave-one-out
alternative (all but L quantized) needs the same number of runs but, on a model that is broken in
several places, every single exclusion still fails and the ranking is noise.

It is measured on held-out images: the validation split (at most SENSITIVITY_IMAGES, class-balanced),
else training images; never the test split, which the gate measures. Not on the calibration images
either: a calibration set that misses the real range hides exactly the error looked for.

Then the k = 1, 2, ... most sensitive layers are kept in fp32 (ORT: `nodes_to_exclude`; TensorRT form:
those modules' quantizers disabled), the artifact is made again and gated again, until it passes or
`max_fp32_layers` is spent. The test split only decides when to stop, never which layers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from kdedge.export.job import ExportJob
from kdedge.export.parity import Parity

if TYPE_CHECKING:
    from kdedge.export.formats import ExportFormat

SENSITIVITY_IMAGES = 256
MEASURE = ("one layer at a time: only that layer quantized, relative squared error of the logits against "
           "fp32 on held-out images")
TIMING_BATCH, TIMING_RUNS = 32, 15
RANKING_KEPT = 10  # the ranking's head recorded in the manifest (the full one can be hundreds of nodes)


@dataclass(frozen=True)
class LayerScore:
    name: str               # what the producer excludes: ONNX node name (ORT) or torch module name (TensorRT form)
    error: float            # relative squared logit error with only this layer quantized
    module: str = ""        # the torch module it comes from, where known (ONNX nodes)
    op: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "op": self.op, "error": self.error}


def output_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """sum((q - f)^2) / sum(f^2): scale-free, so layers of one model compare on one scale."""
    return float(((candidate - reference) ** 2).sum() / max(float((reference ** 2).sum()), 1e-30))


@dataclass
class Fallback:
    before: Parity
    before_failures: list[str]
    after: Parity
    failures: list[str]
    layers: list[LayerScore]
    ranking: list[LayerScore]
    held_out: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)   # the kept attempt's producer's manifest fields
    speed: dict[str, Any] | None = None
    tried: int = 0  # the most layers tried in fp32 (layers: those of the attempt kept, the best one)

    def to_dict(self) -> dict[str, Any]:
        return {"measure": MEASURE, "held_out": self.held_out, "layers": [s.to_dict() for s in self.layers],
                "before": self.before.to_dict(), "before_failures": self.before_failures,
                "after": self.after.to_dict(), "passed": not self.failures, "tried": self.tried,
                "ranking": [s.to_dict() for s in self.ranking[:RANKING_KEPT]], "speed": self.speed}


def run_fallback(fmt: ExportFormat, job: ExportJob, first: tuple[Parity, list[str]], *, budget: int,
                 check: Callable[[Path, dict[str, Any]], tuple[Parity, list[str]]], held_out: dict[str, Any],
                 progress: Callable[[str], None] = lambda _: None, console: Any = None) -> Fallback:
    """Keep the most sensitive layers of `job`'s INT8 model in fp32, one more each round, until `check`
    (the parity gate on job.out) passes or `budget` layers are kept. `first`: the plain export's gate
    result. job.out holds the last attempt when this returns."""
    assert fmt.rank_layers is not None and budget > 0
    with tempfile.TemporaryDirectory(prefix="kdedge-fallback-") as tmp:
        plain = Path(tmp) / "plain.onnx"  # the plain INT8 model, timed against the fallback's
        best_file = Path(tmp) / "best"    # the best attempt so far: what --allow-drop keeps if none passes
        shutil.copyfile(job.out, plain)
        shutil.copyfile(job.out, best_file)
        progress(f"ranking the layers of {fmt.name} by INT8 sensitivity on {held_out['images']} "
                 f"held-out {held_out['split']} images")
        ranking = _ranked(fmt, job, console)
        result, failures, extra, k = first[0], first[1], {}, 0
        best = (result, failures, extra, k)
        for k in range(1, min(budget, len(ranking)) + 1):
            names = tuple(s.name for s in ranking[:k])
            progress(f"{fmt.name}: keeping {k} layer(s) in fp32: {', '.join(names)}")
            extra = fmt.produce(replace(job, fp32_layers=names))
            result, failures = check(job.out, extra)
            if not failures:
                break
            if (result.agreement, -result.accuracy_drop) > (best[0].agreement, -best[0].accuracy_drop):
                best = (result, failures, extra, k)
                shutil.copyfile(job.out, best_file)
        tried = k
        if failures and best[3] != k:  # none passed: keep the best attempt, not the last
            result, failures, extra, k = best
            shutil.copyfile(best_file, job.out)
        outcome = Fallback(first[0], first[1], result, failures, ranking[:k], ranking, held_out, extra,
                           tried=tried)
        if fmt.cpu_timed and not failures and k:
            outcome.speed = ort_speed(job.source, plain, job.out, job.held_out)
        elif not fmt.cpu_timed:
            outcome.speed = {"measured": False, "why": f"{fmt.name} runs on {fmt.runtime}: `kdedge bench` times it there"}
        return outcome


def _ranked(fmt: ExportFormat, job: ExportJob, console: Any) -> list[LayerScore]:
    """fmt.rank_layers(job), with a progress bar on `console` (one quantization per layer takes a while)."""
    if console is None:
        return fmt.rank_layers(job)
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("sensitivity", total=None)
        return fmt.rank_layers(job, tick=lambda done, total: bar.update(task, completed=done, total=total))


def ort_speed(fp32: Path | None, plain: Path, kept: Path, images: np.ndarray | None) -> dict[str, Any]:
    """Median ms per batch of the fp32, plain INT8 and fallback INT8 models in ONNX Runtime, 1 thread,
    interleaved (machine drift hits them alike): the speed the fp32 layers cost."""
    from kdedge.export.ort_session import open_session

    paths = {"fp32": fp32, "int8": plain, "int8_fallback": kept}
    sessions = {k: open_session(p, threads=1) for k, p in paths.items() if p is not None}
    batch = images[:TIMING_BATCH] if images is not None and len(images) else None
    if batch is None:
        return {"measured": False, "why": "no held-out images"}
    name = next(iter(sessions.values())).get_inputs()[0].name
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        s.run(None, {name: batch})
    for _ in range(TIMING_RUNS):
        for key, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {name: batch})
            times[key].append((time.perf_counter() - t0) * 1000)
    ms = {k: float(np.median(v)) for k, v in times.items()}
    out: dict[str, Any] = {"measured": True, "runtime": "onnxruntime CPU, 1 thread", "batch": len(batch),
                           "runs": TIMING_RUNS, "median_ms": ms,
                           "fallback_over_int8": ms["int8_fallback"] / ms["int8"]}
    if "fp32" in ms:
        out["speedup_over_fp32"] = {"int8": ms["fp32"] / ms["int8"], "int8_fallback": ms["fp32"] / ms["int8_fallback"]}
    return out


def held_out_images(data, count: int = SENSITIVITY_IMAGES, *, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalised images the layers are ranked on: the validation split, else training images (a draw
    seeded apart from the calibration's); never the test split."""
    from kdedge.data.int8_calibration import calibration_indices
    from kdedge.inputs import normalise

    split, source = ("val", data.training.val) if len(data.training.val) else ("train", data.training.train)
    idx = calibration_indices(source.labels, count, seed + 1)
    return normalise(source.images[idx].numpy(), data.training.stats), {"split": split, "images": int(len(idx))}


def refusal_line(stage: str, fmt_name: str, result: Parity, failures: list[str], fallback: Fallback | None,
                 budget: int) -> str:
    """One line: the accuracy before (fp32) and after (INT8), the agreement, what the fallback did, the fix."""
    line = (f"{stage} {fmt_name}: accuracy {result.reference_accuracy:.4f} fp32 -> {result.accuracy:.4f} INT8 "
            f"({-result.accuracy_drop * 100:+.2f} pt), agreement {result.agreement:.2%} on {result.images} test "
            f"images ({'; '.join(failures)})")
    if fallback is not None and fallback.tried:
        first = fallback.before
        names = ", ".join(s.name for s in fallback.ranking[:fallback.tried])
        line += (f"; plain INT8 was {first.accuracy:.4f} / {first.agreement:.2%}, tried with {fallback.tried} "
                 f"layer(s) in fp32 ({names})")
        if len(fallback.layers) != fallback.tried:
            line += f", best with {len(fallback.layers)}"
        fix = "raise --max-fp32-layers, "
    elif budget == 0:
        fix = "allow fp32 layers with --max-fp32-layers N, "
    else:
        fix = ""
    return (f"{line}; fix: {fix}calibrate on more images (--calib-images) or with --calib-method "
            "percentile|entropy, train with QAT-KD (quant: in the recipe), or keep it anyway with --allow-drop")
