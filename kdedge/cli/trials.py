"""The options of commands that run trials (`kdedge sweep`, `kdedge distill --seeds`): which backend runs
them (local, or Ray Tune), where Ray is, and what each trial may use."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import typer

# kdedge.trials.BACKENDS, not imported here: the CLI loads kdedge.trials only to run trials
BackendOpt = Annotated[Literal["local", "ray"], typer.Option("--backend",
                                         help="Run the trials one after another here (local) or in parallel on "
                                              "Ray Tune (ray; pip install 'kdedge\\[ray]').")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="With --backend ray: the Ray cluster "
                                                   "(auto, or the head's HOST:PORT); else a one-machine Ray on "
                                                   "127.0.0.1 for this command.")]
CpusOpt = Annotated[Optional[float], typer.Option("--cpus-per-trial", min=0.01,
                                                  help="With --backend ray: CPUs per trial (default 1).")]
GpusOpt = Annotated[Optional[float], typer.Option("--gpus-per-trial", min=0.0,
                                                  help="With --backend ray: GPUs per trial (default 0; "
                                                       "fractions share a GPU).")]


def backend_from(backend: str, address: str | None, cpus: float | None, gpus: float | None):
    from kdedge.trials import make_backend

    return make_backend(backend, address=address, cpus_per_trial=cpus, gpus_per_trial=gpus)

SeedsOpt = Annotated[Optional[str], typer.Option("--seeds", metavar="0,1,2",
                                                 help="One run per seed (<name>_seed<N>, each a trial of --backend), "
                                                      "then mean ± std of teacher, baseline and KD student in "
                                                      "<output_dir>/<name>_seeds/.")]


def without_trials(backend: str, address: str | None, cpus: float | None, gpus: float | None) -> None:
    """A plain `kdedge distill` runs no trials: the trial options need --seeds."""
    given = [flag for flag, value in (("--backend ray", backend != "local" or None), ("--address", address),
                                      ("--cpus-per-trial", cpus), ("--gpus-per-trial", gpus)) if value is not None]
    if given:
        from kdedge.errors import KdedgeError

        raise KdedgeError(f"{', '.join(given)}: only with --seeds (one run per seed); a sweep's points run on a "
                          "backend with `kdedge sweep RECIPE --backend ray`")


def distill_seeds(recipe_file, seeds: str, backend, *, device: str | None, threads: int | None, force: bool,
                  resume: bool, nproc_per_node: int | None) -> None:
    """`kdedge distill RECIPE --seeds 0,1,2`: the seeds as trials, then their mean ± std report."""
    from rich.markup import escape

    from kdedge.cli.app import stage_context
    from kdedge.errors import KdedgeError
    from kdedge.markdown import markdown_table
    from kdedge.recipe import load_recipe
    from kdedge.stages.distill import distill
    from kdedge.trials.seeds import parse_seeds, run_seeds

    if force or nproc_per_node is not None:
        flag = "--force" if force else "--nproc-per-node"
        raise KdedgeError(f"{flag}: not with --seeds (each seed's run is reused when finished); to redo a seed, "
                          "move its run directory <output_dir>/<name>_seed<N> away, and run data-parallel seeds "
                          "one at a time without --seeds")
    recipe = load_recipe(recipe_file)
    ctx = stage_context(device, threads)
    result, out = run_seeds(recipe, str(recipe_file), parse_seeds(seeds), backend, distill, ctx, resume=resume)
    stats = result["summary"]["stats"]
    rows = [[role, *(f"{stats[role][m]['mean']:.4f} ± {stats[role][m]['std']:.4f}" for m in ("accuracy", "nll", "ece"))]
            for role in stats]
    ctx.print(markdown_table(["model", "test accuracy", "NLL", "ECE"], rows))
    ctx.print(f"[bold green]seeds done[/]: {len(result['seeds'])} seeds -> {escape(str(out))} and "
              f"{escape(out.with_suffix('.md').name)}")
