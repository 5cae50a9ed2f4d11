"""Training throughput of kdedge's loop against a bare hand-written PyTorch loop.

Same model, same in-memory data, same optimizer, same batch size, same thread count, in one process;
the two are interleaved (A B A B ...) so drift in machine load hits both alike, and the median of the
repetitions is compared. Writes bench/results/train_throughput.json.

    python bench/train_throughput.py                    # resnet20 + cnn on the embedded Fashion-MNIST
    python bench/train_throughput.py --models resnet20 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdedge.io import write_json
from kdedge.models import build_model
from kdedge.recipe import recipe_from_dict
from kdedge.run import machine_info, package_versions
from kdedge.stages.data import prepare_data
from kdedge.train import fit, supervised_step

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
TARGET_RATIO = 0.95


def recipe_for(model: str, batch_size: int) -> dict:
    return {"name": "bench", "device": "cpu", "data": {"dataset": "fashion_mnist_small"},
            "teacher": {"model": {"name": model},
                        "train": {"epochs": 1, "batch_size": batch_size, "augment": False,
                                  "schedule": {"name": "constant"},
                                  "optimizer": {"name": "sgd", "lr": 0.01, "weight_decay": 0.0}}}}


def kdedge_epoch(recipe, data, seed: int) -> float:
    """Images/s of one kdedge training epoch (its train phase, timed by the loop itself)."""
    torch.manual_seed(seed)
    model = build_model(recipe.teacher.model.name, in_channels=1, num_classes=10, image_size=28)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, supervised_step(model), data=data.training, cfg=recipe.teacher.train, seed=seed,
                     device=torch.device("cpu"), out_dir=Path(tmp), fingerprint="bench")
    return result.history[-1]["train_images_per_s"]


def bare_epoch(recipe, data, seed: int) -> float:
    """The loop a person writes by hand: shuffle, index, normalise, forward, backward, step."""
    torch.manual_seed(seed)
    cfg = recipe.teacher.train
    model = build_model(recipe.teacher.model.name, in_channels=1, num_classes=10, image_size=28)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum, nesterov=True)
    images, labels = data.training.train.images, data.training.train.labels
    mean, std = data.training.stats.mean[0], data.training.stats.std[0]
    n = len(labels)
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    for start in range(0, n, cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        x = ((images[idx].float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "cnn"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.models:
        recipe = recipe_from_dict(recipe_for(name, args.batch_size))
        data = prepare_data(recipe)
        kdedge_epoch(recipe, data, 0), bare_epoch(recipe, data, 0)  # warm-up (allocator, kernels)
        ours, bare = [], []
        for rep in range(args.repeats):
            ours.append(kdedge_epoch(recipe, data, rep))
            bare.append(bare_epoch(recipe, data, rep))
        row = {"model": name, "images_per_epoch": len(data.training.train), "batch_size": args.batch_size,
               "kdedge_images_per_s": statistics.median(ours), "bare_images_per_s": statistics.median(bare),
               "kdedge_runs": ours, "bare_runs": bare}
        row["ratio"] = row["kdedge_images_per_s"] / row["bare_images_per_s"]
        row["meets_target"] = row["ratio"] >= TARGET_RATIO
        rows.append(row)
        print(f"{name:>10}: kdedge {row['kdedge_images_per_s']:8.1f} img/s   bare {row['bare_images_per_s']:8.1f} "
              f"img/s   ratio {row['ratio']:.3f} (target >= {TARGET_RATIO})")

    write_json(args.out, {
        "benchmark": "train_throughput", "target_ratio": TARGET_RATIO,
        "data": "fashion_mnist_small (embedded), no augmentation", "threads": args.threads,
        "repeats": args.repeats, "statistic": "median images/s of the train phase of one epoch",
        "machine": machine_info(), "versions": package_versions(), "results": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
