"""The Typer app every command registers on, its shared options, and the rule that user errors are
one line on stderr with exit code 2, never a traceback. The environment is read here (KDEDGE_DATA)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from kdedge.choices import Device
from kdedge.errors import KdedgeError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Compress an image classifier for the edge, and prove it is still accurate, "
                       "calibrated and fast.")
recipe_app = typer.Typer(no_args_is_help=True, help="Check recipes and print their JSON schema.")
app.add_typer(recipe_app, name="recipe")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a run made by a different recipe, or restart it.")]
DeviceOpt = Annotated[Optional[Device], typer.Option("--device", help="Where to train (overrides the recipe).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue interrupted stages from their last finished epoch.")]


def fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"kdedge: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


# Only training commands checkpoint per epoch; the others write each artifact atomically, so an
# interrupt there keeps what finished and leaves nothing half-written.
RESUMABLE_COMMANDS = {"train", "distill", "sweep"}


def user_errors(fn: Callable) -> Callable:
    interrupted = ("interrupted; the last finished epoch is checkpointed — rerun with --resume to continue"
                   if fn.__name__ in RESUMABLE_COMMANDS else
                   "interrupted; finished results are kept and nothing half-written was left — rerun to finish")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdedgeError as exc:
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            fail(interrupted, EXIT_INTERRUPTED)

    return wrapper


def stage_context(device: str | None, threads: int | None):
    import torch

    from kdedge.stages.context import StageContext

    if threads:
        torch.set_num_threads(threads)
    data_env = os.environ.get("KDEDGE_DATA")
    roots = tuple(Path(p) for p in data_env.split(os.pathsep) if p) if data_env else ()
    return StageContext(console=Console(), data_roots=roots, device_override=device)


def open_recipe_run(recipe, recipe_file: Path, device: str | None, threads: int | None, force: bool):
    """The stage context and the (checked, not yet written) run directory of a recipe."""
    from kdedge.run import open_run

    return stage_context(device, threads), open_run(recipe, recipe_file, force=force)
