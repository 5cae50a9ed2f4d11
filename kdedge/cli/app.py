"""The Typer app every command registers on, its shared options, and the rule that user errors are
one line on stderr with exit code 2, never a traceback. The environment is read here (KDEDGE_DATA)."""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from kdedge import __version__
from kdedge.choices import Device
from kdedge.errors import KdedgeError
from kdedge.io import write_role
from kdedge.ranks import is_main_process, rank


class _PlainHelp:
    """Help without typer's type tag on plain flags (`--resume <bool>`) and usage lines that read
    `kdedge train [OPTIONS] RECIPE`, not `{recipe_file}`."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # a flag takes no value, so it shows none
        return params

    def collect_usage_pieces(self, ctx):
        # typer wraps a required argument's name in braces; the metavar alone is the usual form
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


class KdedgeCommand(_PlainHelp, TyperCommand):
    pass


class KdedgeGroup(_PlainHelp, TyperGroup):
    pass


class _App(typer.Typer):
    def command(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("cls", KdedgeCommand)
        return super().command(*args, **kwargs)


app = _App(cls=KdedgeGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
           help="Compress an image classifier for the edge, and prove it is still accurate, "
                "calibrated and fast.")
recipe_app = _App(cls=KdedgeGroup, no_args_is_help=True, help="Check recipes and print their JSON schema.")
app.add_typer(recipe_app, name="recipe")


def _print_version(value: bool) -> None:
    if value:
        print(f"kdedge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                                help="Print kdedge's version and exit.")] = False) -> None:
    pass


EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a run made by a different recipe, or restart it.")]
DeviceOpt = Annotated[Optional[Device], typer.Option("--device", help="Where to run: train, evaluate, calibrate (overrides the recipe).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue interrupted stages from their last finished epoch.")]


def fail(message: str, code: int = EXIT_USAGE) -> None:
    if not is_main_process():  # a data-parallel worker other than rank 0 says which it is
        message = f"(rank {rank()}) {message}"
    print(f"kdedge: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


# Only training commands checkpoint per epoch; the others write each artifact atomically, so an
# interrupt there keeps what finished and leaves nothing half-written.
RESUMABLE_COMMANDS = {"train", "distill", "sweep"}

# Write failures the user fixes outside kdedge (permissions, a full disk): one line naming the file.
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}

# The run directory the current command writes (set by open_recipe_run / note_run), so that a failure
# can mark its unfinished stages as stopped instead of leaving them "running".
_open_run: list[Path] = []


def note_run(root: Path) -> None:
    _open_run[:] = [Path(root)]


def user_errors(fn: Callable) -> Callable:
    resumable = fn.__name__ in RESUMABLE_COMMANDS

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _open_run.clear()
        try:
            return fn(*args, **kwargs)
        except KdedgeError as exc:
            _mark_stopped("failed", exc.message)
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt as exc:
            _mark_stopped("interrupted", "interrupted (Ctrl-C)")
            if not is_main_process():  # every data-parallel rank was interrupted: rank 0 says what was kept
                raise typer.Exit(EXIT_INTERRUPTED)
            fail(interrupted_message(exc, resumable), EXIT_INTERRUPTED)
        except OSError as exc:
            message = os_error_message(exc)
            _mark_stopped("failed", message or repr(exc))
            if message is None:
                raise
            fail(message)
        except Exception as exc:  # a bug: the traceback stays, but the run does not claim to be running
            _mark_stopped("failed", repr(exc))
            raise

    return wrapper


def interrupted_message(exc: BaseException, resumable: bool) -> str:
    """What an interrupt kept. The training loop tags its KeyboardInterrupt with the stage and how many
    epochs were checkpointed (duck-typed: this module must not import the training stack)."""
    if not resumable:
        return "interrupted; finished results are kept and nothing half-written was left — rerun to finish"
    stage, done, total = (getattr(exc, name, None) for name in ("stage", "epochs_done", "epochs"))
    if stage is None:
        return ("interrupted; finished stages are kept and an unfinished one keeps its last finished epoch, "
                "if any — rerun with --resume to continue")
    if done == 0:
        return (f"interrupted in {stage} epoch 1/{total}, before any epoch finished: nothing of {stage} was "
                "checkpointed yet (finished stages are kept) — rerun to start it again")
    return (f"interrupted in {stage}; epoch {done}/{total} is checkpointed — rerun with --resume to continue "
            "from there")


def os_error_message(exc: OSError) -> str | None:
    """One line for a file kdedge may not write or has no room for; None for other OS errors."""
    where = exc.filename or "a run file"
    if exc.filename and Path(exc.filename).name.startswith("."):
        where = Path(exc.filename).parent  # kdedge's temp files and folders are hidden: name their directory
    if exc.errno in _NOT_WRITABLE:
        return (f"{where}: cannot write there ({exc.strerror}); make the directory writable, or set another "
                "output_dir in the recipe (for a run: copy it somewhere writable)")
    if exc.errno in _NO_SPACE:
        return (f"{where}: {exc.strerror or 'no space left on device'}; nothing half-written was kept — free "
                "some space, then rerun (training commands: with --resume)")
    return None


def _mark_stopped(status: str, why: str) -> None:
    """Best effort: the stages this command left "running" say it stopped (a full disk may refuse even this)."""
    write_role().stop_waiting()  # a data-parallel rank that failed must not wait for the others
    if not _open_run:
        return
    from kdedge.run import mark_own_stages_stopped

    mark_own_stages_stopped(_open_run[0], status, why)


def stage_context(device: str | None, threads: int | None):
    import torch

    from kdedge.stages.context import StageContext

    if threads:
        torch.set_num_threads(threads)
    data_env = os.environ.get("KDEDGE_DATA")
    roots = tuple(Path(p) for p in data_env.split(os.pathsep) if p) if data_env else ()
    # in a data-parallel run only rank 0 prints (the others run the same pipeline silently)
    return StageContext(console=Console() if is_main_process() else None, data_roots=roots, device_override=device)


def open_recipe_run(recipe, recipe_file: Path, device: str | None, threads: int | None, force: bool):
    """The stage context and the (checked, not yet written) run directory of a recipe."""
    from kdedge.run import open_run

    planned = open_run(recipe, recipe_file, force=force)
    note_run(planned.run.root)
    return stage_context(device, threads), planned
