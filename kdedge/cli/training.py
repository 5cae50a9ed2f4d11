"""Training commands: `kdedge train`, `distill`, `sweep` and `calibrate` (the teacher's temperature)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from kdedge.cli.app import DeviceOpt, ForceOpt, ResumeOpt, ThreadsOpt, app, open_recipe_run, stage_context, user_errors
from kdedge.errors import KdedgeError
from kdedge.lock import run_lock


def _run_recipe(recipe, recipe_file: Path, stage, *, device: str | None, threads: int | None, force: bool,
                resume: bool):
    """Lock the recipe's run (one writer per run), check that the recipe may use it, and run `stage` there.
    Returns (context, planned run, what the stage returned)."""
    from kdedge.run import lock_recipe_run

    with lock_recipe_run(recipe):
        ctx, planned = open_recipe_run(recipe, recipe_file, device, threads, force)
        return ctx, planned, stage(recipe, planned, ctx, resume=resume)


@app.command()
@user_errors
def train(
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="YAML recipe (see recipes/).")],
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Train the recipe's teacher into <output_dir>/<name>/teacher/ (reused when already finished)."""
    from kdedge.recipe import load_recipe
    from kdedge.stages.teacher import train_teacher

    ctx, planned, summary = _run_recipe(load_recipe(recipe_file), recipe_file, train_teacher, device=device,
                                        threads=threads, force=force, resume=resume)
    run = planned.run
    ctx.print(f"[bold green]teacher done[/]: test accuracy {summary['test']['accuracy']:.4f}, "
              f"NLL {summary['test']['nll']:.4f}, ECE {summary['test']['ece']:.4f} -> {escape(str(run.root))}")


@app.command()
@user_errors
def distill(
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="YAML recipe with student: and distill: sections.")],
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Train (or reuse) the teacher, fit its temperature if asked, distil the student and train its no-KD baseline."""
    from kdedge.recipe import load_recipe
    from kdedge.stages.distill import distill as run_distill
    from kdedge.summary import run_summary_table

    ctx, planned, _ = _run_recipe(load_recipe(recipe_file), recipe_file, run_distill, device=device,
                                  threads=threads, force=force, resume=resume)
    ctx.print(run_summary_table(planned.run))
    ctx.print(f"[bold green]done[/] -> {escape(str(planned.run.root))}; next: `kdedge export "
              f"{escape(str(planned.run.root))} --int8`")


@app.command()
@user_errors
def sweep(
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="YAML recipe with student: and distill: sections.")],
    set_: Annotated[Optional[str], typer.Option("--set", help="FIELD=VALUES, e.g. distill.losses[0].temperature=1:20 "
                                                              "or student.model.widths=[32],[64] (else the recipe's sweep:)")] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="Also vote the students as ensembles.")] = False,
    mc_dropout: Annotated[int, typer.Option("--mc-dropout", min=0, max=10_000,
                                            help="MC-dropout passes on the teacher and every student, with MUPE "
                                                 "(seed 000's uncertainty transfer); 0 = off.")] = 0,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """One student per value of a recipe field (teacher and baseline reused); table + plot of accuracy."""
    from kdedge.recipe import load_recipe, with_sweep
    from kdedge.stages.distill import distill as run_distill

    recipe = load_recipe(recipe_file)
    if set_ is not None:
        recipe = with_sweep(recipe, set_, ensemble=ensemble, mc_dropout=mc_dropout, source=str(recipe_file))
    elif recipe.sweep is None:
        raise KdedgeError(f"{recipe_file}: no sweep: section; pass --set FIELD=VALUES")
    _run_recipe(recipe, recipe_file, run_distill, device=device, threads=threads, force=force, resume=resume)


@app.command()
@user_errors
def calibrate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory with a finished teacher "
                                                                          "(`kdedge train` or `kdedge distill`).")],
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fit the teacher's temperature T* by NLL on the validation split; report ECE before and after."""
    from kdedge.run import RunDir
    from kdedge.stages.temperature import calibrate_teacher

    ctx = stage_context(device, threads)
    with run_lock(run_dir):  # one writer per run
        result = calibrate_teacher(RunDir(run_dir), ctx)
    before, after = result["before"]["test"], result["after"]["test"]
    ctx.print(f"[bold green]calibrated[/]: T* = {result['temperature']:.4f}; test ECE {before['ece']:.4f} -> "
              f"{after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}")
