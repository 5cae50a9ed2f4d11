"""Cost of distillation over plain training: one KD epoch (teacher logits cached) / one supervised epoch.

Same student, data, batch size, optimizer and threads, in one process, interleaved (KD, supervised,
KD, ...), median of the repetitions. The one-off cost of caching the teacher's logits is reported
separately. Writes bench/results/kd_overhead.json.

    python bench/kd_overhead.py
    python bench/kd_overhead.py --students mlp cnn --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdedge.io import write_json
from kdedge.losses import LOSSES
from kdedge.models import build_model
from kdedge.recipe import recipe_from_dict
from kdedge.run import machine_info, package_versions
from kdedge.stages.data import prepare_data
from kdedge.train import fit, supervised_step
from kdedge.train.batches import prepare_batch
from kdedge.train.distill_step import KDTerm, make_distill_step, teacher_outputs

RESULTS = Path(__file__).resolve().parent / "results" / "kd_overhead.json"
TARGET = 1.15
# From a micro MLP (where per-op overhead of the loss is visible) to conv students.
STUDENTS = {"mlp": {"widths": [64]}, "cnn": {"channels": [16, 32]}, "resnet8": {}}


def epoch_seconds(student_name: str, data, cfg, step_factory, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model(student_name, in_channels=1, num_classes=10, image_size=28, **STUDENTS[student_name])
    step, extra = step_factory(model)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, step, data=data.training, cfg=cfg, seed=seed, device=torch.device("cpu"),
                     out_dir=Path(tmp), fingerprint="bench", extra_modules=extra)
    return result.history[-1]["epoch_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe = recipe_from_dict({
        "name": "bench", "device": "cpu", "data": {"dataset": "fashion_mnist_small"},
        "teacher": {"model": {"name": "resnet20"}, "train": {"epochs": 1}},
        "student": {"model": {"name": "mlp"}, "train": {"epochs": 1, "batch_size": 128, "augment": False,
                                                          "schedule": {"name": "constant"}}},
        "distill": {"losses": [{"name": "hinton", "alpha": 0.5, "temperature": 4.0}]},
    })
    data = prepare_data(recipe)
    cfg = recipe.student.train
    teacher = build_model("resnet20", in_channels=1, num_classes=10, image_size=28).eval()  # weights irrelevant for time
    t0 = time.perf_counter()
    cache = teacher_outputs(teacher, data.training.train, data.training.stats, [], batch_size=500,
                            device=torch.device("cpu"))
    cache_s = time.perf_counter() - t0
    terms = [KDTerm("hinton", 1.0, LOSSES.get("hinton"), {"alpha": 0.5, "temperature": 4.0})]
    probe = prepare_batch(data.training.train.images[:2], *data.training.stats.tensors(torch.device("cpu")))

    def kd(model):
        return make_distill_step(model, teacher, terms, label_mode="labels", cache=cache, probe=probe)

    def supervised(model):
        return supervised_step(model), None

    rows = []
    for name in args.students:
        epoch_seconds(name, data, cfg, kd, 0), epoch_seconds(name, data, cfg, supervised, 0)  # warm-up
        kd_s, sup_s = [], []
        for rep in range(args.repeats):
            kd_s.append(epoch_seconds(name, data, cfg, kd, rep))
            sup_s.append(epoch_seconds(name, data, cfg, supervised, rep))
        row = {"student": name, "options": STUDENTS[name], "kd_epoch_s": statistics.median(kd_s),
               "supervised_epoch_s": statistics.median(sup_s), "kd_runs_s": kd_s, "supervised_runs_s": sup_s}
        row["ratio"] = row["kd_epoch_s"] / row["supervised_epoch_s"]
        row["meets_target"] = row["ratio"] <= TARGET
        rows.append(row)
        print(f"{name:>5}: KD epoch {row['kd_epoch_s']:.3f} s   supervised {row['supervised_epoch_s']:.3f} s   "
              f"ratio {row['ratio']:.3f} (target <= {TARGET})")

    write_json(args.out, {
        "benchmark": "kd_overhead", "target_ratio_max": TARGET, "teacher": "resnet20 (logits cached once)",
        "teacher_cache_s": cache_s, "data": f"fashion_mnist_small train split ({len(data.training.train)} images)",
        "batch_size": cfg.batch_size, "threads": args.threads, "repeats": args.repeats,
        "statistic": "median train-phase seconds of one epoch", "machine": machine_info(),
        "versions": package_versions(), "results": rows,
    })
    print(f"teacher logits cached once in {cache_s:.2f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
