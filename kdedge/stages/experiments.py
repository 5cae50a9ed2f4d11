"""Seed 001's experiments on top of a distilled run: student ensembles, MC dropout, chains, symmetry
(the sweep, whose points are trials of their own, is stages/sweep.py and uses the first two).

Each lives in its own sub-directory of the run and reuses the run's teacher; each writes a JSON report
for machines, a Markdown table and a PNG for people.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from rich.markup import escape
from torch import nn

from kdedge.inference import predict_logits
from kdedge.inputs import normalise
from kdedge.io import write_json, write_text
from kdedge.layout import STUDENT, TEACHER
from kdedge.markdown import markdown_table
from kdedge.metrics import CalibrationBins
from kdedge.metrics.ensemble import best_k_accuracies, majority_vote, mean_probability_vote
from kdedge.stage_model import load_stage_model
from kdedge.plots import line_plot, reliability_diagram
from kdedge.recipe import Recipe
from kdedge.run import RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData
from kdedge.stages.students import TransferSet, distill_student, kd_terms
from kdedge.uncertainty.compare import compare_mc_dropout


@dataclass(frozen=True)
class ExperimentInputs:
    """What every experiment needs from the main distillation (built once by the distill stage)."""

    recipe: Recipe
    run: RunDir
    ctx: StageContext
    data: PreparedData
    teacher: nn.Module
    temperature: float | None
    device: torch.device
    resume: bool
    trials: Any = None                           # the sweep's trials backend (kdedge.trials); None = local
    pipeline: Callable[..., Any] | None = None   # the stage that runs one sweep point's recipe (distill)


@dataclass(frozen=True)
class Member:
    """A model of an ensemble or MC-dropout comparison: a stage of a run (a sweep point's own run)."""

    run: RunDir
    stage: str
    path: str  # where it is, relative to the run the report belongs to (sweep/<field>/<value>/student)


def slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(value).replace("[", "_").replace("]", "")).strip("_") or "_"


def point_label(value: Any) -> str:
    """A sweep value as people read it: a model spec as `cnn(channels=[8, 16], dropout=0.5)`."""
    if isinstance(value, dict) and "name" in value:
        options = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value['name']}({options})"
    return str(value)


def _record(inputs: ExperimentInputs, stage: str) -> dict[str, Any]:
    return inputs.run.read_manifest()["stages"][stage]


def write_report(directory: Path, name: str, payload: dict, columns: list[str], rows: list[list], title: str) -> None:
    write_json(directory / f"{name}.json", payload)
    write_text(directory / f"{name}.md", f"# {title}\n\n" + markdown_table(columns, rows))


# ---------------------------------------------------------------------------------------- uncertainty


def run_uncertainty(inputs: ExperimentInputs, members: dict[str, Member], out_dir: Path) -> dict[str, Any]:
    """Seed 000: MC dropout on the teacher and each student (N passes, test split), MC accuracy, ECE
    and mean entropy, each student's MUPE against the teacher, and the MC reliability curves overlaid."""
    recipe, training = inputs.recipe, inputs.data.training
    models: dict[str, nn.Module] = {"teacher": inputs.teacher}
    parameters = {"teacher": _record(inputs, TEACHER)["parameters"]}
    for label, member in members.items():
        models[label], _ = load_stage_model(member.run, member.stage, fix="rerun `kdedge sweep` to rebuild it")
        parameters[label] = member.run.stage_record(member.stage)["parameters"]
    x = torch.from_numpy(normalise(training.test.images.numpy(), training.stats))
    result = compare_mc_dropout(models, x, training.test.labels, samples=recipe.sweep.mc_dropout, seed=recipe.seed,
                                device=inputs.device, masks=recipe.sweep.mupe_masks, log=inputs.ctx.print)
    result["stages"] = {label: member.path for label, member in members.items()}
    result["parameters"] = parameters
    rows = []
    for name, entry in result["models"].items():
        mupe = result.get("mupe", {}).get(name)
        if entry["applicable"]:
            rows.append([name, parameters[name], entry["accuracy"], entry["ece"], entry["mean_entropy"],
                         f"{mupe['value']:.5f}" if mupe else "—"])
        else:
            rows.append([name, parameters[name], "no dropout", "—", "—",
                         f"{mupe['value']:.5f} (deterministic)" if mupe else "—"])
    write_report(out_dir, "uncertainty", result, ["model", "params", "MC acc", "MC ECE", "mean entropy", "MUPE"],
                  rows, f"MC dropout ({recipe.sweep.mc_dropout} passes, {result['masks']} masks: "
                        f"{result['masks_note']}): teacher vs the sweep's students")
    curves = {name: CalibrationBins.from_dict(e["bins"]) for name, e in result["models"].items() if e["applicable"]}
    if curves:
        reliability_diagram(curves, out_dir / "uncertainty.png",
                            title=f"{recipe.name}: MC-dropout reliability, teacher vs students")
    inputs.ctx.print(f"[green]uncertainty[/]: MC dropout on {len(models)} models -> {escape(str(out_dir / 'uncertainty.md'))}")
    return result


# -------------------------------------------------------------------------------------------- ensemble


def run_ensemble(inputs: ExperimentInputs, members: list[Member], out_dir: Path) -> dict[str, Any]:
    """Majority and mean-probability votes of the given students, and best-k ensembles (k = 1..N)."""
    training = inputs.data.training
    val_probs, test_probs = [], []
    for member in members:
        model, _ = load_stage_model(member.run, member.stage, fix="rerun `kdedge sweep` to rebuild it")
        model.to(inputs.device)
        batch = inputs.recipe.student.train.eval_batch_size
        val_probs.append(predict_logits(model, training.val, training.stats, batch_size=batch,
                                        device=inputs.device).softmax(1))
        test_probs.append(predict_logits(model, training.test, training.stats, batch_size=batch,
                                         device=inputs.device).softmax(1))
    labels = training.test.labels
    best_k = best_k_accuracies(val_probs, training.val.labels, test_probs, labels)
    singles = [(p.argmax(1) == labels).double().mean().item() for p in test_probs]
    stages = [member.path for member in members]
    payload = {
        "members": stages, "member_test_accuracy": singles,
        "all_majority": (majority_vote(test_probs) == labels).double().mean().item(),
        "all_mean_probability": (mean_probability_vote(test_probs) == labels).double().mean().item(),
        "best_k": [{**row, "members": [stages[i] for i in row["members"]]} for row in best_k],
        "ranking": "members ranked by validation accuracy; test accuracy reported",
    }
    write_report(out_dir, "ensemble", payload, ["k", "majority vote acc", "mean-probability acc"],
                  [[r["k"], r["majority"], r["mean_probability"]] for r in best_k],
                  f"Ensembles of the {len(stages)} sweep students (best-k by validation accuracy)")
    ks = [r["k"] for r in best_k]
    line_plot({"majority vote": (ks, [r["majority"] for r in best_k]),
               "mean probability": (ks, [r["mean_probability"] for r in best_k])},
              out_dir / "ensemble.png", title="best-k student ensembles", xlabel="k (members, best first)",
              ylabel="test accuracy", hlines={"best single student": max(singles)})
    inputs.ctx.print(f"[green]ensemble[/]: all {len(stages)} students: majority {payload['all_majority']:.4f}, "
                     f"mean-prob {payload['all_mean_probability']:.4f} (best single {max(singles):.4f})")
    return payload


# ----------------------------------------------------------------------------------- chain & symmetry


def run_chain(inputs: ExperimentInputs, transfer: TransferSet) -> dict[str, Any]:
    """teacher -> assistant(s) -> student, compared with teacher -> student directly (stage `student`)."""
    recipe, run = inputs.recipe, inputs.run
    terms = kd_terms(recipe, inputs.temperature)
    previous: nn.Module = inputs.teacher
    hops = []
    for name in recipe.chain[1:]:
        config = recipe.student if name == "student" else recipe.assistants[name]
        stage = f"chain/{slug(name)}"
        record = distill_student(recipe, run, inputs.ctx, data=inputs.data, transfer=transfer, teacher=previous,
                                 terms=terms, student=config, stage=stage, device=inputs.device,
                                 resume=inputs.resume, temperature=inputs.temperature,
                                 fingerprint_extra="->".join(recipe.chain))
        hops.append({"name": name, "stage": stage, "model": record["model"], "parameters": record["parameters"],
                     "test": record["test"]})
        previous, _ = load_stage_model(run, stage, fix="rerun `kdedge distill`")
        previous.to(inputs.device).eval()
    direct = _record(inputs, STUDENT)
    teacher = _record(inputs, TEACHER)
    payload = {"chain": recipe.chain, "teacher": teacher["test"], "hops": hops, "direct_student": direct["test"],
               "chain_minus_direct_accuracy": hops[-1]["test"]["accuracy"] - direct["test"]["accuracy"]}
    rows = [["teacher", teacher["model"], teacher["parameters"], teacher["test"]["accuracy"]]]
    rows += [[f"chain: {h['name']}", h["model"], h["parameters"], h["test"]["accuracy"]] for h in hops]
    rows += [["direct: teacher -> student", direct["model"], direct["parameters"], direct["test"]["accuracy"]]]
    out_dir = run.root / "chain"
    write_report(out_dir, "chain", payload, ["model", "architecture", "params", "test acc"], rows,
                  f"Teacher assistant chain {' -> '.join(recipe.chain)} vs direct distillation")
    line_plot({"chain": (["teacher", *[h["name"] for h in hops]],
                         [teacher["test"]["accuracy"], *[h["test"]["accuracy"] for h in hops]])},
              out_dir / "chain.png", title="accuracy along the chain", xlabel="model", ylabel="test accuracy",
              hlines={"direct teacher -> student": direct["test"]["accuracy"]})
    inputs.ctx.print(f"[green]chain[/]: student via chain {hops[-1]['test']['accuracy']:.4f} vs direct "
                     f"{direct['test']['accuracy']:.4f}")
    return payload


def run_symmetry(inputs: ExperimentInputs, transfer: TransferSet) -> dict[str, Any]:
    """The trained student teaches an untrained copy of the teacher's architecture (same budget as the
    teacher); compared with the original teacher and the student."""
    recipe, run = inputs.recipe, inputs.run
    student, _ = load_stage_model(run, STUDENT, fix="rerun `kdedge distill`")
    student.to(inputs.device).eval()
    stage = "symmetry/teacher_copy"
    record = distill_student(recipe, run, inputs.ctx, data=inputs.data, transfer=transfer, teacher=student,
                             terms=kd_terms(recipe, inputs.temperature), student=recipe.teacher, stage=stage,
                             device=inputs.device, resume=inputs.resume, temperature=inputs.temperature,
                             fingerprint_extra="symmetry")
    teacher, direct = _record(inputs, TEACHER), _record(inputs, STUDENT)
    payload = {"teacher": teacher["test"], "student": direct["test"], "teacher_copy_from_student": record["test"]}
    rows = [["original teacher", teacher["model"], teacher["test"]["accuracy"]],
            ["student (from teacher)", direct["model"], direct["test"]["accuracy"]],
            ["teacher copy (from student)", record["model"], record["test"]["accuracy"]]]
    out_dir = run.root / "symmetry"
    write_report(out_dir, "symmetry", payload, ["model", "architecture", "test acc"], rows,
                  "Symmetry: distilling the student back into the teacher's architecture")
    line_plot({"test accuracy": ([r[0] for r in rows], [r[2] for r in rows])}, out_dir / "symmetry.png",
              title="symmetry of distillation", xlabel="model", ylabel="test accuracy")
    inputs.ctx.print(f"[green]symmetry[/]: teacher copy from student {record['test']['accuracy']:.4f} vs original "
                     f"teacher {teacher['test']['accuracy']:.4f}")
    return payload
