"""Training commands: `kdedge train`, `distill`, `sweep` and `calibrate` (the teacher's temperature)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from kdedge.cli.app import DeviceOpt, ForceOpt, ResumeOpt, ThreadsOpt, app, open_recipe_run, stage_context, user_errors
from kdedge.cli.trials import (AddressOpt, BackendOpt, CpusOpt, GpusOpt, SeedsOpt, backend_from, distill_seeds,
                               without_trials)
from kdedge.errors import KdedgeError
from kdedge.lock import run_lock


def _run_recipe(recipe, recipe_file: Path, stage, *, device: str | None, threads: int | None, force: bool,
                resume: bool):
    """Lock the recipe's run (one writer per run), check that the recipe may use it, and run `stage` there.
    Returns (context, planned run, what the stage returned)."""
    from kdedge.ranks import launched
    from kdedge.run import lock_recipe_run

    if not launched():
        with lock_recipe_run(recipe):
            ctx, planned = open_recipe_run(recipe, recipe_file, device, threads, force)
            return ctx, planned, stage(recipe, planned, ctx, resume=resume)
    # a data-parallel worker: every rank runs the pipeline, rank 0 alone locks and writes the run
    from kdedge.train.distributed import process_group

    with process_group(device or recipe.device), lock_recipe_run(recipe):  # held by rank 0 for every rank
        ctx, planned = open_recipe_run(recipe, recipe_file, device, threads, force)
        return ctx, planned, stage(recipe, planned, ctx, resume=resume)


def _launched_instead(recipe_file: Path, nproc_per_node: int | None, nnodes: int, rdzv_endpoint: str | None) -> bool:
    """With --nproc-per-node (outside a worker): check the recipe, run the workers, exit with their code."""
    from kdedge.ranks import launched

    if nproc_per_node is None and (nnodes > 1 or rdzv_endpoint):
        raise KdedgeError("--nnodes / --rdzv-endpoint need --nproc-per-node N (the processes on each node)")
    if nproc_per_node is None or launched():
        return False
    from kdedge.recipe import load_recipe
    from kdedge.train.launch import LaunchPlan, launch

    load_recipe(recipe_file)  # a bad recipe fails here in one line, not once per worker
    code = launch(LaunchPlan(nproc_per_node, nnodes, rdzv_endpoint))
    raise typer.Exit(code)


NprocOpt = Annotated[Optional[int], typer.Option(
    "--nproc-per-node", min=1, max=1024,
    help="Train data-parallel in N processes on this node (torch's elastic launcher; gloo on CPU, NCCL on "
         "CUDA, one GPU each). The recipe's batch size stays the global batch.")]
NnodesOpt = Annotated[int, typer.Option("--nnodes", min=1, max=4096,
                                        help="Nodes in a multi-node job (start the same command on each).")]
RdzvOpt = Annotated[Optional[str], typer.Option("--rdzv-endpoint", metavar="HOST:PORT",
                                                help="Rendezvous of a multi-node job: node 0's address.")]


@app.command()
@user_errors
def train(
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="YAML recipe (see recipes/).")],
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    nproc_per_node: NprocOpt = None,
    nnodes: NnodesOpt = 1,
    rdzv_endpoint: RdzvOpt = None,
) -> None:
    """Train the recipe's teacher into <output_dir>/<name>/teacher/ (reused when already finished)."""
    _launched_instead(recipe_file, nproc_per_node, nnodes, rdzv_endpoint)
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
    nproc_per_node: NprocOpt = None,
    nnodes: NnodesOpt = 1,
    rdzv_endpoint: RdzvOpt = None,
    seeds: SeedsOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    cpus_per_trial: CpusOpt = None,
    gpus_per_trial: GpusOpt = None,
) -> None:
    """Train (or reuse) the teacher, fit its temperature if asked, distil the student and train its no-KD baseline."""
    if seeds is not None:  # one run per seed, each a trial of the backend, then their mean ± std
        return distill_seeds(recipe_file, seeds, backend_from(backend, address, cpus_per_trial, gpus_per_trial),
                             device=device, threads=threads, force=force, resume=resume, nproc_per_node=nproc_per_node)
    without_trials(backend, address, cpus_per_trial, gpus_per_trial)
    _launched_instead(recipe_file, nproc_per_node, nnodes, rdzv_endpoint)
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
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    cpus_per_trial: CpusOpt = None,
    gpus_per_trial: GpusOpt = None,
) -> None:
    """One student per value of a recipe field, each its own run (teacher and baseline reused), one after
    another or in parallel on Ray Tune; table + plot of accuracy. Finished points are reused."""
    from functools import partial

    from kdedge.recipe import load_recipe, with_sweep
    from kdedge.stages.distill import distill

    run_distill = partial(distill, trials=backend_from(backend, address, cpus_per_trial, gpus_per_trial))

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
