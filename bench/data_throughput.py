"""Images/s of the training loop's data path on a 64x64 image folder, three ways, in one run.

The folder is written from real data (the embedded Fashion-MNIST, upscaled to 64x64 and saved as
3-channel PNG class folders). Each measurement is one pass over the same images in the training
loop's order: gather a batch, prepare_batch (uint8 -> float, RandomResizedCrop + flip, normalise) and
one SGD step of kdedge's `cnn` at 64x64, on one intra-op thread. Sources:

  memory      the images as an in-memory uint8 tensor (the embedded datasets' path)
  memmap      kdedge's image_folder: the on-disk uint8 cache, memory-mapped (page cache warm)
  loader-wN   a torch DataLoader decoding the PNGs every epoch (Pillow, kdedge's decode), N workers

Repeats are interleaved (memory, memmap, loader-w0, ... then again) so drift in machine load hits all
alike; the median is reported. Also "data only" (without the model step) shows the data cost alone.
Writes bench/results/data_throughput.json and .md.

    python bench/data_throughput.py                 # ~2-3 minutes on 2 cores
    python bench/data_throughput.py --images 1000 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results" / "data_throughput.json"
TARGET = 0.9
SIZE = 64


def write_folder(root: Path, n_train: int, n_test: int) -> None:
    from kdedge.data import load_dataset

    small = load_dataset("fashion_mnist_small", [])
    for split, data, n in (("train", small.train, n_train), ("test", small.test, n_test)):
        for i in range(min(n, len(data))):
            cls = small.classes[int(data.labels[i])].replace("/", "-").replace(" ", "_")
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(data.images[i, 0].numpy()).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            img.convert("RGB").save(folder / f"{i:05d}.png")


class PngFiles(torch.utils.data.Dataset):
    """The alternative: decode each PNG when the batch needs it (as torchvision's ImageFolder does)."""

    def __init__(self, files: list[Path], labels: list[int]) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from kdedge.data.image_files import decode_image

        pixels, _ = decode_image(self.files[i], SIZE, color="rgb", resize="crop")
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), self.labels[i]


def one_pass(batches, model, optimizer, mean, std, *, train: bool, seed: int, limit: int | None = None) -> float:
    from kdedge.train.batches import AugmentSpec, prepare_batch

    spec = AugmentSpec(0, True, "random_resized_crop", 0.35)
    gen = torch.Generator().manual_seed(seed)
    seen = 0
    t0 = time.perf_counter()
    for i, (images, labels) in enumerate(batches):
        if limit is not None and i == limit:
            break
        x = prepare_batch(images, mean, std, augmentation=spec, generator=gen)
        if train:
            loss = F.cross_entropy(model(x), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seen += len(labels)
    return seen / (time.perf_counter() - t0)


def tensor_batches(images: torch.Tensor, labels: torch.Tensor, batch: int, seed: int):
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        yield images[idx], labels[idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="training images in the folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--step-batches", type=int, default=8, help="batches per pass with the model step")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from kdedge.data import load_dataset
    from kdedge.inputs import InputStats
    from kdedge.io import write_json
    from kdedge.models import build_model
    from kdedge.run import machine_info, package_versions

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fmnist64"
        t0 = time.perf_counter()
        write_folder(root, args.images, 500)
        write_s = time.perf_counter() - t0
        os.environ["KDEDGE_CACHE_DIR"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        folder = load_dataset("image_folder", [root], image_size=SIZE, split_seed=0)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_dataset("image_folder", [root], image_size=SIZE, split_seed=0)
        reuse_s = time.perf_counter() - t0
        mapped, labels = folder.train.images, folder.train.labels
        memory = mapped.clone()  # same bytes, plain RAM
        files = sorted(p for p in (root / "train").rglob("*.png"))
        # the loader decodes the very files the cache holds for the train split: same images, same labels
        train_files = _train_files(root, folder)
        mean, std = InputStats(folder.mean, folder.std).tensors(torch.device("cpu"))
        # a small cnn: the smaller the step, the larger the data path's share (the harder the test)
        model = build_model("cnn", in_channels=3, num_classes=len(folder.classes), image_size=SIZE,
                            channels=[16, 32])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def loader(workers: int):
            dataset = PngFiles(train_files, labels.tolist())
            return torch.utils.data.DataLoader(
                dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))

        loaders = {w: loader(w) for w in args.workers}
        sources = {"memory": lambda s: tensor_batches(memory, labels, args.batch_size, s),
                   "memmap": lambda s: tensor_batches(mapped, labels, args.batch_size, s)}
        sources.update({f"loader-w{w}": (lambda s, w=w: iter(loaders[w])) for w in args.workers})
        for name, make in sources.items():  # warm-up: worker start-up, page cache, allocator
            one_pass(make(99), model, optimizer, mean, std, train=False, seed=99)
        runs: dict[str, dict[str, list[float]]] = {n: {"train_step": [], "data_only": []} for n in sources}
        for rep in range(args.repeats):
            for kind in ("data_only", "train_step"):
                for name, make in sources.items():
                    train = kind == "train_step"
                    rate = one_pass(make(rep), model, optimizer, mean, std, train=train, seed=rep,
                                    limit=args.step_batches if train else None)
                    runs[name][kind].append(rate)
                    print(f"repeat {rep + 1}/{args.repeats} {kind:10s} {name:10s} {rate:8.0f} img/s", flush=True)
        loaders.clear()  # persistent workers exit

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in runs.items()}
    ratio = med["memmap"]["train_step"] / med["memory"]["train_step"]
    result = {
        "what": "images/s of the training data path on a 64x64 RGB PNG folder (embedded Fashion-MNIST upscaled): "
                "batch gather + prepare_batch (RandomResizedCrop + flip + normalise) + one SGD step of cnn "
                "(channels [16, 32]) on the first step_batches batches of each pass (data_only: the whole split, "
                "without the step); median of interleaved repeats",
        "images": len(labels), "batch_size": args.batch_size, "step_batches": args.step_batches, "repeats": args.repeats, "threads": 1,
        "cpu_count": os.cpu_count(), "workers": args.workers,
        "median_images_per_s": med, "runs": runs,
        "memmap_vs_memory_ratio": ratio, "target_ratio": TARGET, "target_met": ratio >= TARGET,
        "memmap_vs_memory_data_only_ratio": med["memmap"]["data_only"] / med["memory"]["data_only"],
        "best_loader_vs_memory_ratio": max(med[f"loader-w{w}"]["train_step"] for w in args.workers)
        / med["memory"]["train_step"],
        "cache_build_s": build_s, "cache_reuse_load_s": reuse_s, "png_write_s": write_s,
        "cache_mib": mapped.numel() / 2**20 * (1 + 500 / max(len(files), 1)),
        "machine": machine_info(), "packages": package_versions(),
    }
    write_json(args.out, result)
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(f"memmap / memory = {ratio:.3f} (target >= {TARGET}); wrote {args.out}")


def _train_files(root: Path, folder) -> list[Path]:
    """The train split's files in the cache's order, re-derived from the same plan (no decoding)."""
    from kdedge.data.folder_layout import plan_folder

    plan = plan_folder([root], val_fraction=0.1, test_fraction=None, seed=0, skip_bad=False)
    assert list(plan.splits["train"].labels) == folder.train.labels.tolist()
    return list(plan.splits["train"].files)


def _markdown(r: dict) -> str:
    rows = ["| source | data only (img/s) | with cnn train step (img/s) | vs memory (train step) |", "|---|---|---|---|"]
    base = r["median_images_per_s"]["memory"]["train_step"]
    for name, m in r["median_images_per_s"].items():
        rows.append(f"| {name} | {m['data_only']:,.0f} | {m['train_step']:,.0f} | {m['train_step'] / base:.3f}x |")
    return (f"# Image-folder data path throughput\n\n{r['what']}.\n\n{r['images']} training images, batch "
            f"{r['batch_size']}, {r['threads']} intra-op thread, {r['cpu_count']} CPU cores, {r['repeats']} repeats.\n\n"
            + "\n".join(rows) + "\n\n"
            f"memmap / memory = **{r['memmap_vs_memory_ratio']:.3f}** (target >= {r['target_ratio']}: "
            f"{'met' if r['target_met'] else 'missed'}); data path alone "
            f"{r['memmap_vs_memory_data_only_ratio']:.3f}. Cache built once in {r['cache_build_s']:.1f} s, "
            f"reopened in {r['cache_reuse_load_s']:.2f} s.\n\n" + WHY)


WHY = """Why the cache, not DataLoader workers: decoding the PNGs costs more than the whole rest of the data
path (the loader's "data only" rate is under half the cache's even with workers), and on this 2-core
machine every worker process takes a core from the training thread, so 2 workers are slower than 0
with the model step. Workers only pay off with spare cores; the cache pays off everywhere, after one
decode. Differences under ~10 % in the train-step column are within this shared machine's noise (see
the per-repeat rates in the .json); the data-only column is the steadier comparison.
"""


if __name__ == "__main__":
    main()
