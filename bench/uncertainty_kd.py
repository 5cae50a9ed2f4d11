"""Uncertainty-aware KD (issue 17): vanilla KD vs mc_kd (a), mc_kd_student (b), mc_kd_dirichlet (c), full Fashion-MNIST.

A dropout teacher (recipes/fmnist_cnn_teacher.yaml: CNN [32, 64, 128], dropout 0.2) -> CNN students of two
sizes ([8, 16, 32] and [16, 32, 64]) trained with (METHODS): hinton (T 4, alpha 0.5) on a student with
dropout 0.2 and on the same student without dropout; mc_kd (teacher MC mean over N = 20 passes, cached;
T 1, alpha 0.5) on the student without dropout; mc_kd_student (K = 4 student passes per batch; T 4,
alpha 0.5) on the student with dropout; mc_kd_dirichlet (a Dirichlet fitted to the teacher's 20 passes,
alpha 0.5) on the student without dropout. Per seed and student, on the 10k test images: accuracy and ECE
(deterministic and MC dropout), MUPE against the teacher (independent masks, seed 000's definition) and
where it comes from (bias, variance, class disagreements), and the OOD AUROC of predictive entropy /
max-probability against MNIST-5k's test split. The goal (issue 17): MUPE at least 2x lower than vanilla KD
at equal accuracy (+-0.3 pt), OOD AUROC not below vanilla KD; each method is compared with vanilla KD on
the student with dropout (the issue's reference) and on its own student. Runs go to runs/uncertainty_kd/
and are reused when finished; `--method LABEL=JSON` adds a variant.

    python bench/uncertainty_kd.py                                    # 3 seeds, full budget (hours on 2 cores)
    python bench/uncertainty_kd.py --seeds 0 --epochs 1 --train-subset 2000 \\
        --teacher-run runs/fmnist_cnn_teacher --out bench/results/uncertainty_kd_smoke.json   # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from kdedge.bench.ood import load_ood, ood_report
from kdedge.inputs import normalise
from kdedge.io import write_result
from kdedge.markdown import markdown_table
from kdedge.metrics import classification_report
from kdedge.recipe import load_recipe, recipe_from_dict
from kdedge.run import RunDir, machine_info, package_versions
from kdedge.stage_model import load_stage_model
from kdedge.stages.context import StageContext
from kdedge.stages.data import recorded_data
from kdedge.stages.distill import distill
from kdedge.stages.teacher import train_teacher
from kdedge.trials import Trial, run_trial
from kdedge.trials.seeds import seeded
from kdedge.uncertainty.compare import compare_mc_dropout

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STUDENT_DROPOUT = 0.2
SIZES = {"small": [8, 16, 32], "large": [16, 32, 64]}
# A method is a loss entry plus, optionally, `student_dropout` (default STUDENT_DROPOUT). Chosen from the
# exploration on seed 0 (README, "Uncertainty-aware distillation"): the students' own dropout costs these
# small CNNs 1.2-1.4 pt and dominates MUPE, so (a) trains a deterministic student (uncertainty in one
# pass) and is compared with vanilla KD on that same deterministic student; (b) needs student dropout
# and took T = 4 (T = 1 was worse on MUPE and AUROC).
METHODS = {
    "vanilla_kd": {"name": "hinton", "alpha": 0.5, "temperature": 4.0},
    "vanilla_kd_nodrop": {"name": "hinton", "alpha": 0.5, "temperature": 4.0, "student_dropout": 0.0},
    "mc_kd_nodrop": {"name": "mc_kd", "alpha": 0.5, "temperature": 1.0, "samples": 20, "student_dropout": 0.0},
    "mc_kd_student_t4": {"name": "mc_kd_student", "alpha": 0.5, "temperature": 4.0, "samples": 20,
                         "student_samples": 4},
    # (c): a Dirichlet over the teacher's 20 passes, on the student without dropout (uncertainty in one pass)
    "mc_kd_dirichlet_nodrop": {"name": "mc_kd_dirichlet", "alpha": 0.5, "samples": 20, "student_dropout": 0.0},
}
REFERENCES = ("vanilla_kd", "vanilla_kd_nodrop")  # vanilla KD on a student with dropout, and without
METRICS = ("accuracy", "ece", "mc_accuracy", "mc_ece", "mc_confidence", "mupe", "mupe_bias", "mupe_variance",
           "disagreement", "mupe_from_disagreement", "auroc_entropy", "auroc_max_prob")


def methods_from(extra: list[str], only: list[str] | None) -> dict[str, dict[str, Any]]:
    """METHODS plus `LABEL=JSON` additions, restricted to `only` (+ the REFERENCES)."""
    methods = dict(METHODS)
    for item in extra:
        label, sep, spec = item.partition("=")
        try:
            entry = json.loads(spec) if sep else None
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--method {label}: not JSON ({exc.msg}); e.g. mc_kd_t4='{{\"name\": \"mc_kd\"}}'")
        if not label or not isinstance(entry, dict) or "name" not in entry:
            raise SystemExit(f"--method {item!r}: expected LABEL={{\"name\": LOSS, ...}}")
        methods[label] = entry
    if only is not None:
        unknown = sorted(set(only) - set(methods))
        if unknown:
            raise SystemExit(f"--only: unknown method(s) {', '.join(unknown)}; known: {', '.join(methods)}")
        methods = {k: v for k, v in methods.items() if k in only or k in REFERENCES}
    return methods


def _run(trial: Trial, stage, ctx: StageContext) -> Path:
    outcome = run_trial(trial, stage, ctx, resume=True)
    if not outcome.ok:
        raise SystemExit(f"{trial.root}: {trial.name} failed: {outcome.error}")
    return outcome.root


def student_recipe(teacher_root: Path, size: str, method: str, seed: int, args) -> dict[str, Any]:
    loss = dict(args.methods[method])
    dropout = loss.pop("student_dropout", STUDENT_DROPOUT)  # a method may train a student without dropout
    distill_cfg: dict[str, Any] = {"losses": [loss], "baseline": False}
    if args.train_subset:
        distill_cfg["transfer"] = {"reduced": {"per_class": max(1, args.train_subset // 10), "seed": seed}}
    return {"name": f"ukd_{size}_{method}_seed{seed}", "seed": seed, "device": "auto",
            "output_dir": str(args.runs), "data": {"dataset": "fashion_mnist", "val_fraction": 0.1, "split_seed": 0},
            "teacher": {"from_run": str(teacher_root)},
            "student": {"model": {"name": "cnn", "channels": SIZES[size], "dropout": dropout},
                        "train": {"epochs": args.epochs, "batch_size": 128, "augment": False,
                                  "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                                                "weight_decay": 0.0005},
                                  "schedule": {"name": "cosine", "warmup_epochs": min(1, args.epochs / 2)}}},
            "distill": distill_cfg}


def evaluate(teacher_root: Path, students: dict[str, Path], args, ood) -> dict[str, dict[str, float]]:
    """Per model (teacher + students): deterministic and MC accuracy/ECE, MUPE vs teacher, OOD AUROC."""
    run = RunDir(teacher_root)
    data = recorded_data(run.read_manifest(), run.manifest_path)
    test, stats = data.training.test, data.training.stats
    models = {"teacher": load_stage_model(run, "teacher")[0]}
    models.update({name: load_stage_model(RunDir(root), "student")[0] for name, root in students.items()})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = normalise(test.images.numpy(), stats)
    x = torch.from_numpy(images)
    mc = compare_mc_dropout(models, x, test.labels, samples=args.mc_samples, seed=0, device=device)
    oods = ood_report(models, images, ood, stats, samples=args.mc_samples, seed=0, device=device)["models"]
    out = {}
    for name, model in models.items():
        with torch.inference_mode():
            logits = torch.cat([model.to(device).eval()(x[i:i + 512].to(device)).float().cpu()
                                for i in range(0, len(x), 512)])
        det = classification_report(logits, test.labels)
        m = mc["models"][name]
        auc = oods[name].get("torch-mc", oods[name]["torch"])
        parts = mc.get("mupe", {}).get(name, {})
        out[name] = {"accuracy": det["accuracy"], "ece": det["ece"], "mc_accuracy": m.get("accuracy"),
                     "mc_ece": m.get("ece"), "mc_confidence": m.get("mean_confidence"), "mupe": parts.get("value"),
                     "mupe_bias": parts.get("bias"), "mupe_variance": parts.get("variance"),
                     "disagreement": parts.get("disagreement"), "mupe_from_disagreement": parts.get("from_disagreement"),
                     "auroc_entropy": auc["entropy"], "auroc_max_prob": auc["max_prob"],
                     "auroc_deterministic": oods[name]["torch"]}
    return out


def summarise(per_seed: list[dict[str, Any]], methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """mean / std over seeds per model and metric; the goal per student size (mc method vs vanilla KD)."""
    names = per_seed[0]["models"].keys()
    summary: dict[str, Any] = {}
    for name in names:
        summary[name] = {}
        for metric in METRICS:
            values = [v for s in per_seed if (v := s["models"][name].get(metric)) is not None]
            if values:
                summary[name][metric] = {"mean": statistics.fmean(values),
                                         "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    goals = {}
    for size in SIZES:
        for method in methods:
            cand = summary.get(f"{size}/{method}")
            if method in REFERENCES or not cand:
                continue
            # the issue's reference (vanilla KD, student with dropout) and vanilla KD on the same student
            same = "vanilla_kd_nodrop" if methods[method].get("student_dropout", STUDENT_DROPOUT) == 0 else "vanilla_kd"
            for ref in dict.fromkeys(("vanilla_kd", same)):
                base = summary.get(f"{size}/{ref}")
                if not base:
                    continue
                ratio = base["mupe"]["mean"] / max(cand["mupe"]["mean"], 1e-12)
                acc_diff = 100 * (cand["accuracy"]["mean"] - base["accuracy"]["mean"])
                auc_diff = cand["auroc_entropy"]["mean"] - base["auroc_entropy"]["mean"]
                goals[f"{size}/{method} vs {ref}"] = {
                    "mupe_ratio_vanilla_over_method": ratio, "accuracy_diff_pt": acc_diff,
                    "auroc_entropy_diff": auc_diff, "met": bool(ratio >= 2 and abs(acc_diff) <= 0.3 and auc_diff >= 0)}
    return {"models": summary, "goal": goals}


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]["models"]

    def cell(name: str, metric: str, fmt: str) -> str:
        v = s[name].get(metric)
        return "—" if v is None else f"{v['mean']:{fmt}} ± {v['std']:{fmt}}"

    rows = [[name, cell(name, "accuracy", ".4f"), cell(name, "ece", ".4f"), cell(name, "mc_ece", ".4f"),
             cell(name, "mupe", ".5f"), cell(name, "auroc_entropy", ".4f"), cell(name, "auroc_max_prob", ".4f")]
            for name in s]
    goal_rows = [[k, f"{g['mupe_ratio_vanilla_over_method']:.2f}×", f"{g['accuracy_diff_pt']:+.2f}",
                  f"{g['auroc_entropy_diff']:+.4f}", "yes" if g["met"] else "no"]
                 for k, g in result["summary"]["goal"].items()]
    b = result["budget"]
    if b["train_subset"] or b["epochs"] < 8:
        head = "SMOKE RUN (reduced budget: proves the pipeline, not the claim)"
    elif len(result["seeds"]) < 3:
        head = f"{len(result['seeds'])}-seed run at the full budget (exploration: not the 3-seed claim)"
    else:
        head = "Full run"
    return "\n".join([
        f"# Uncertainty-aware KD on Fashion-MNIST: {head}", "",
        f"Seeds {result['seeds']}; student epochs {b['epochs']}; transfer images {b['train_subset'] or 'all'}; "
        f"teacher {result['teacher']}; MC passes {b['mc_samples']} (independent masks); OOD set "
        f"{result['ood']['dataset']} ({result['ood']['images']} images, {result['ood']['conversion']}).", "",
        markdown_table(["model", "accuracy", "ECE", "MC ECE", "MUPE vs teacher", "OOD AUROC (entropy, MC)",
                        "OOD AUROC (max-prob, MC)"], rows), "",
        "Where MUPE comes from (d = student − teacher MC confidence per test image; MUPE = bias² + variance; "
        "disagreement: images whose MC predicted classes differ):", "",
        markdown_table(["model", "MC accuracy", "MC confidence", "bias (mean d)", "variance of d",
                        "class disagreement", "share of MUPE from disagreement"],
                       [[name, cell(name, "mc_accuracy", ".4f"), cell(name, "mc_confidence", ".4f"),
                         cell(name, "mupe_bias", "+.4f"), cell(name, "mupe_variance", ".5f"),
                         cell(name, "disagreement", ".4f"), cell(name, "mupe_from_disagreement", ".3f")]
                        for name in s if name != "teacher"]), "",
        "Goal (issue 17): MUPE >= 2x lower than vanilla KD at equal accuracy (±0.3 pt), OOD AUROC not below it.", "",
        markdown_table(["student vs reference", "MUPE reference / method", "accuracy diff (pt)", "AUROC diff", "goal met"],
                       goal_rows), ""])


def plot(result: dict[str, Any], path: Path) -> None:
    """MUPE (x, lower is better) against OOD AUROC (y, higher is better) per student, mean ± std over seeds,
    with the teacher's AUROC as a line: the trade the goal asks about, in one picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kdedge.io import atomic_path

    s = result["summary"]["models"]
    fig = Figure(figsize=(7.5, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    markers = dict(zip(result["methods"], itertools.cycle("osD^vP*X<>hp")))
    for color, size in zip(("C0", "C1"), result["sizes"]):
        for method, marker in markers.items():
            m = s.get(f"{size}/{method}")
            if not m or "mupe" not in m:
                continue
            x, y = m["mupe"]["mean"], m["auroc_entropy"]["mean"]
            ax.errorbar(x, y, xerr=m["mupe"]["std"], yerr=m["auroc_entropy"]["std"], fmt="none", ecolor=color,
                        elinewidth=0.8, capsize=3, alpha=0.6)
            ax.plot(x, y, marker, color=color, markersize=9, label=f"{size} / {method}")  # legend: marker only
    teacher = s.get("teacher", {}).get("auroc_entropy")
    if teacher:
        ax.axhline(teacher["mean"], linestyle="--", color="0.4", label="teacher (MC)")
    ax.axhline(0.5, linestyle=":", color="0.7", label="chance")
    ax.set_xlabel("MUPE vs teacher (lower: closer confidences)")
    ax.set_ylabel(f"OOD AUROC, entropy ({result['ood']['dataset']}; higher: better)")
    ax.set_title(f"Uncertainty-aware KD on Fashion-MNIST, {len(result['seeds'])} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    print(f"wrote {path.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8, help="student epochs")
    parser.add_argument("--train-subset", type=int, default=None, help="students learn from this many transfer "
                        "images (stratified); default: the whole training split")
    parser.add_argument("--teacher", type=Path, default=ROOT / "recipes" / "fmnist_cnn_teacher.yaml")
    parser.add_argument("--teacher-run", type=Path, default=None, help="a finished dropout teacher run shared by "
                        "every seed (else one teacher per seed, trained from --teacher)")
    parser.add_argument("--mc-samples", type=int, default=50, help="MC-dropout passes in the evaluation")
    parser.add_argument("--ood", default="mnist_5k")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "uncertainty_kd")
    parser.add_argument("--out", type=Path, default=RESULTS / "uncertainty_kd.json")
    parser.add_argument("--method", action="append", default=[], metavar="LABEL=JSON",
                        help='add or replace a method: a label and its loss entry, e.g. '
                             'mc_kd_t4=\'{"name": "mc_kd", "alpha": 0.5, "temperature": 4}\' (repeatable)')
    parser.add_argument("--replot", action="store_true", help="only redraw --out's PNG from its JSON")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="train and report only these methods (the vanilla KD references are always kept)")
    args = parser.parse_args()
    args.methods = methods_from(args.method, args.only)
    if args.replot:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    ctx = StageContext(console=Console())
    ood = load_ood(args.ood, (), channels=1, size=(28, 28), own_dataset="fashion_mnist")
    per_seed = []
    for seed in args.seeds:
        if args.teacher_run is None:
            base = load_recipe(args.teacher)
            raw = {**seeded(base, seed, str(args.teacher)).to_dict(), "output_dir": str(args.runs)}
            teacher_root = _run(Trial.of(f"teacher, seed {seed}", recipe_from_dict(raw)), train_teacher, ctx)
        else:
            teacher_root = args.teacher_run.resolve()
        students = {}
        for size in args.sizes:
            for method in args.methods:
                recipe = recipe_from_dict(student_recipe(teacher_root, size, method, seed, args))
                students[f"{size}/{method}"] = _run(Trial.of(f"{size} {method}, seed {seed}", recipe), distill, ctx)
        per_seed.append({"seed": seed, "teacher_run": str(teacher_root),
                         "models": evaluate(teacher_root, students, args, ood)})
        # written after every seed: a long run stopped early keeps the seeds it finished, labelled as such
        done = [s["seed"] for s in per_seed]
        result = {"smoke": bool(args.train_subset or args.epochs < 8 or len(done) < 3),
                  "seeds": done, "planned_seeds": args.seeds, "teacher": str(args.teacher_run or args.teacher),
                  "budget": {"epochs": args.epochs, "train_subset": args.train_subset, "mc_samples": args.mc_samples},
                  "methods": args.methods, "sizes": {k: SIZES[k] for k in args.sizes},
                  "ood": {"dataset": ood.name, "images": int(len(ood.images)), "source": ood.source,
                          "conversion": ood.conversion},
                  "per_seed": per_seed, "summary": summarise(per_seed, args.methods),
                  "machine": machine_info(), "versions": package_versions()}
        write_result(args.out, result, markdown(result))
        plot(result, args.out.with_suffix(".png"))

if __name__ == "__main__":
    main()
