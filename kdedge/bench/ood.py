"""`kdedge bench RUN --ood DATASET`: does the models' uncertainty flag images from another distribution?

The OOD images (a registered dataset's test split, or every image file under a folder) are brought to the
run's input contract: channels (grey -> repeated to RGB; RGB -> grey by ITU-R 601 luma, as Pillow's "L")
and size (bilinear with antialiasing, squashed to the model's H x W), then normalised with the run's own
mean/std, exactly as an in-distribution image would be. For each model, the AUROC of predictive entropy
and of max-probability (kdedge/metrics/ood.py; higher score = more OOD) separating the bench's test split
(in) from the OOD set (out), from: torch deterministic (softmax), torch MC dropout (where the model has
dropout; each model its own masks) and the exported MC graphs (`onnx-mc`, `onnx-mc-int8`, ONNX Runtime
CPU) where the run has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.inference import batched, uses_conv
from kdedge.inputs import InputStats, normalise
from kdedge.markdown import markdown_table
from kdedge.metrics.ood import SCORE_NOTES, ood_auroc

MAX_FOLDER_IMAGES = 10_000  # a folder's first images (sorted paths): enough for a stable AUROC, bounded time
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what Pillow's convert("L") uses


@dataclass(frozen=True)
class OodSet:
    name: str              # the dataset name or the folder path, as given
    images: torch.Tensor   # uint8 [N, C, H, W], already at the run's input contract
    source: str
    conversion: str        # what was done to the images, in words


def _registered() -> list[str]:
    from kdedge.data import DATASETS

    return [n for n in DATASETS.names() if n != "image_folder"]  # a folder is given by its path


def check_ood_spec(spec: str, own_dataset: str | None = None) -> None:
    """A registered dataset or an existing folder; anything else is a one-line error (before any work)."""
    if spec == own_dataset:
        raise KdedgeError(f"--ood {spec}: that is the run's own dataset, not out-of-distribution data; give "
                          f"another one ({', '.join(n for n in _registered() if n != spec)}) or a folder of images")
    if spec in _registered() or Path(spec).is_dir():
        return
    hint = " (image folders are given by their path)" if spec == "image_folder" else ""
    raise KdedgeError(f"--ood {spec!r}: not a registered dataset{hint} nor an image folder; give one of "
                      f"{', '.join(_registered())}, or a directory of images")


def load_ood(spec: str, roots: Sequence[Path], *, channels: int, size: tuple[int, int],
             own_dataset: str | None = None) -> OodSet:
    """The OOD images at the run's input contract (`channels`, `size` = (H, W))."""
    check_ood_spec(spec, own_dataset)
    if spec in _registered():
        from kdedge.data import load_dataset

        data = load_dataset(spec, roots)
        raw, source = data.test.images, f"{data.source} (test split)"
    else:
        raw, source = _folder_images(Path(spec), size[0]), str(Path(spec).resolve())
    images, conversion = to_contract(raw, channels=channels, size=size)
    return OodSet(spec, images, source, conversion)


def _folder_images(root: Path, size: int) -> torch.Tensor:
    from kdedge.data.image_files import UnreadableImage, decode_image, image_extensions

    exts = image_extensions()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())[:MAX_FOLDER_IMAGES]
    arrays = []
    for path in files:
        try:
            arrays.append(decode_image(path, size, color="rgb", resize="crop")[0])
        except UnreadableImage:
            continue  # a broken file is not evidence either way
    if not arrays:
        raise KdedgeError(f"--ood {root}: no readable image files under it (looked for {', '.join(sorted(exts)[:6])}, ...)")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_contract(images: torch.Tensor, *, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """uint8 [N, C, H, W] -> uint8 [N, channels, *size], and what was done in words."""
    done = []
    c = images.shape[1]
    x = images
    if c != channels:
        if c == 1 and channels == 3:
            x, what = x.expand(-1, 3, -1, -1), "grey repeated to RGB"
        elif c == 3 and channels == 1:
            weights = torch.tensor(LUMA, dtype=torch.float64).view(1, 3, 1, 1)
            x, what = (x.double() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8), "RGB to grey (ITU-R 601 luma)"
        else:
            raise KdedgeError(f"--ood: images with {c} channels cannot be brought to the model's {channels}")
        done.append(what)
    if tuple(x.shape[2:]) != tuple(size):
        resized = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        done.append(f"resized {x.shape[2]}x{x.shape[3]} -> {size[0]}x{size[1]} (bilinear, antialiased)")
        x = resized.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous(), "; ".join(done) or "none (already the model's channels and size)"


def model_probs(model: nn.Module, images: np.ndarray, *, samples: int, seed: int, stream: str,
                device: torch.device, batch: int = 256) -> dict[str, torch.Tensor]:
    """{"torch": softmax, "torch-mc": MC mean (when the model has dropout)} for normalised images."""
    from kdedge.uncertainty.mc_dropout import McDropoutNotApplicable, mc_dropout_predict

    x = torch.from_numpy(np.ascontiguousarray(images))
    model = model.to(device).eval()

    def logits(b: torch.Tensor) -> torch.Tensor:
        b = b.to(device)
        if uses_conv(model) and b.ndim == 4:
            b = b.contiguous(memory_format=torch.channels_last)
        return model(b).float().cpu()

    with torch.inference_mode():
        out = {"torch": torch.softmax(batched(logits, x, batch).double(), 1)}
    if samples > 0:
        try:
            out["torch-mc"] = mc_dropout_predict(model, x, samples=samples, seed=seed, stream=stream,
                                                 device=device).mean_probs.double()
        except McDropoutNotApplicable:
            pass
    return out


def exported_probs(run_root: Path, exports: dict, stage: str, images: np.ndarray, *, threads: int | None,
                   batch: int) -> dict[str, torch.Tensor]:
    """The MC-averaged probabilities of each exported MC graph of `stage` (kdedge/bench/mc_onnx.py's formats)."""
    from kdedge.bench.mc_onnx import MC_RUNTIMES
    from kdedge.bench.runtimes import verified_export
    from kdedge.export.ort_session import open_session

    out = {}
    for name, (fmt, _) in MC_RUNTIMES.items():
        if fmt not in exports.get(stage, {}):
            continue
        session = open_session(verified_export(run_root, exports, stage, fmt), threads=threads)
        probs = batched(lambda b: session.run(["probs"], {"images": np.ascontiguousarray(b)})[0], images, batch)
        out[name] = torch.from_numpy(probs).double()
    return out


def ood_report(models: dict[str, nn.Module], in_images: np.ndarray, ood: OodSet, stats: InputStats, *,
               samples: int, seed: int, device: torch.device, run_root: Path | None = None,
               exports: dict | None = None, threads: int | None = None, batch: int = 256,
               log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """{dataset, images, source, conversion, scores, mc_samples, models: {stage: {predictor: {score: AUROC}}}}."""
    out_images = normalise(ood.images.numpy(), stats)
    per_model: dict[str, Any] = {}
    for stage, model in models.items():
        probs_in = model_probs(model, in_images, samples=samples, seed=seed, stream=stage, device=device)
        probs_out = model_probs(model, out_images, samples=samples, seed=seed, stream=stage, device=device)
        if run_root is not None and exports:
            probs_in.update(exported_probs(run_root, exports, stage, in_images, threads=threads, batch=batch))
            probs_out.update(exported_probs(run_root, exports, stage, out_images, threads=threads, batch=batch))
        per_model[stage] = {name: ood_auroc(probs_in[name], probs_out[name]) for name in probs_in}
        log(f"[cyan]OOD[/] {stage} vs {ood.name}: " + ", ".join(
            f"{name} AUROC(entropy) {v['entropy']:.3f}" for name, v in per_model[stage].items()))
    return {"dataset": ood.name, "images": int(len(ood.images)), "in_images": int(len(in_images)),
            "source": ood.source, "conversion": ood.conversion, "scores": SCORE_NOTES, "mc_samples": samples,
            "masks": "independent (each model its own)", "models": per_model}


PREDICTORS = {"torch": "torch, deterministic", "torch-mc": "torch, MC dropout", "ort-mc": "exported MC graph (ORT, fp32)",
              "ort-mc-int8": "exported MC graph (ORT, INT8)"}


def report_lines(report: dict[str, Any]) -> list[str]:
    """report.md's OOD section (nothing when the bench ran without --ood)."""
    ood = report.get("ood")
    if not ood:
        return []
    rows = [[stage, PREDICTORS.get(name, name), f"{v['entropy']:.4f}", f"{v['max_prob']:.4f}"]
            for stage, by_predictor in ood["models"].items() for name, v in by_predictor.items()]
    return [f"## Out-of-distribution: test split vs {ood['dataset']}", "",
            markdown_table(["model", "predictor", "AUROC (entropy)", "AUROC (max-prob)"], rows), "",
            f"{ood['in_images']} in-distribution test images vs {ood['images']} OOD images from {ood['source']}; "
            f"converted: {ood['conversion']}. Scores: higher = more OOD (entropy; negated max probability); "
            f"AUROC 0.5 = chance, 1 = perfect separation. MC: {ood['mc_samples']} passes, {ood['masks']}.", ""]
