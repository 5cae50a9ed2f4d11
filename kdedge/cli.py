"""The `kdedge` command. Each command parses, loads the recipe or run, and calls one stage.

The environment is read here and nowhere else (KDEDGE_DATA); user errors become one line on stderr
with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from kdedge.errors import KdedgeError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Compress an image classifier for the edge, and prove it is still accurate, "
                       "calibrated and fast.")
recipe_app = typer.Typer(no_args_is_help=True, help="Check recipes and print their JSON schema.")
app.add_typer(recipe_app, name="recipe")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a run made by a different recipe, or restart it.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda (overrides the recipe).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue interrupted stages from their last finished epoch.")]


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"kdedge: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


# Only training commands checkpoint per epoch; the others write each artifact atomically, so an
# interrupt there keeps what finished and leaves nothing half-written.
RESUMABLE_COMMANDS = {"train", "distill", "sweep"}


def _user_errors(fn: Callable) -> Callable:
    interrupted = ("interrupted; the last finished epoch is checkpointed — rerun with --resume to continue"
                   if fn.__name__ in RESUMABLE_COMMANDS else
                   "interrupted; finished results are kept and nothing half-written was left — rerun to finish")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdedgeError as exc:
            _fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            _fail(interrupted, EXIT_INTERRUPTED)

    return wrapper


def _context(device: str | None, threads: int | None):
    import torch

    from kdedge.stages.context import StageContext

    if threads:
        torch.set_num_threads(threads)
    data_env = os.environ.get("KDEDGE_DATA")
    roots = tuple(Path(p) for p in data_env.split(os.pathsep) if p) if data_env else ()
    return StageContext(console=Console(), data_roots=roots, device_override=device)


def _open(recipe, recipe_file: Path, device: str | None, threads: int | None, force: bool):
    """The stage context and the (checked, not yet written) run directory of a recipe."""
    from kdedge.run import open_run

    return _context(device, threads), open_run(recipe, recipe_file, force=force)


@app.command()
@_user_errors
def train(
    recipe_file: Annotated[Path, typer.Argument(help="YAML recipe (see recipes/).")],
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Train the recipe's teacher into <output_dir>/<name>/teacher/ (reused when already finished)."""
    from kdedge.recipe import load_recipe
    from kdedge.stages.teacher import train_teacher

    recipe = load_recipe(recipe_file)
    ctx, planned = _open(recipe, recipe_file, device, threads, force)
    summary = train_teacher(recipe, planned, ctx, resume=resume)
    run = planned.run
    ctx.print(f"[bold green]teacher done[/]: test accuracy {summary['test']['accuracy']:.4f}, "
              f"NLL {summary['test']['nll']:.4f}, ECE {summary['test']['ece']:.4f} -> {run.root}")


@app.command()
@_user_errors
def distill(
    recipe_file: Annotated[Path, typer.Argument(help="YAML recipe with student: and distill: sections.")],
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Train (or reuse) the teacher, calibrate it if asked, distil the student and train its no-KD baseline."""
    from kdedge.recipe import load_recipe
    from kdedge.stages.distill import distill as run_distill
    from kdedge.summary import run_summary_table

    recipe = load_recipe(recipe_file)
    ctx, planned = _open(recipe, recipe_file, device, threads, force)
    run_distill(recipe, planned, ctx, resume=resume)
    ctx.print(run_summary_table(planned.run))


@app.command()
@_user_errors
def sweep(
    recipe_file: Annotated[Path, typer.Argument(help="YAML recipe with student: and distill: sections.")],
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
    ctx, planned = _open(recipe, recipe_file, device, threads, force)
    run_distill(recipe, planned, ctx, resume=resume)


@app.command()
@_user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory made by `kdedge distill`.")],
    int8: Annotated[bool, typer.Option("--int8", help="fp32 ONNX + ONNX Runtime INT8 + TensorRT-form INT8 "
                                                      "(the last where nvidia-modelopt is installed).")] = False,
    format_: Annotated[Optional[list[str]], typer.Option("--format", "-f", help="Formats to write (repeat or "
                                                         "comma-separate); `kdedge list formats` shows them.")] = None,
    models: Annotated[Optional[str], typer.Option("--models", help="Comma list: teacher,student,baseline,"
                                                  "student_qat (default: every finished one).")] = None,
    calib_images: Annotated[Optional[int], typer.Option("--calib-images", min=1, help="Real training images "
                                                        "(stratified) that calibrate INT8 scales (default: recipe, "
                                                        "else 512).")] = None,
    calib_method: Annotated[Optional[str], typer.Option("--calib-method", help="minmax | percentile | entropy "
                                                        "(ONNX Runtime INT8; default: recipe, else minmax).")] = None,
    quantization: Annotated[str, typer.Option("--quantization", help="auto | static | dynamic (ONNX Runtime "
                                              "INT8; auto = dynamic for models without convolutions).")] = "auto",
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", help="Parity gate: least top-1 "
                                                           "agreement with fp32 (default: recipe, else 0.99).")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Parity gate: largest accuracy drop, "
                                                      "0.005 = 0.5 pt (default: recipe, else 0.005).")] = None,
    allow_drop: Annotated[bool, typer.Option("--allow-drop", help="Keep INT8 exports that fail the parity gate "
                                             "(recorded as such in the manifest).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing exports made with other settings.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Export the run's models: fp32 ONNX, INT8 for ONNX Runtime and TensorRT, TensorRT engines."""
    from kdedge.export.formats import INT8_DEFAULT, parse_formats
    from kdedge.export.ort_int8 import CALIB_METHODS
    from kdedge.export.parity import ParityThresholds
    from kdedge.stages.export import ExportOptions, export_run, export_settings, export_table

    if calib_method is not None and calib_method not in CALIB_METHODS:
        raise KdedgeError(f"--calib-method {calib_method!r}: valid: {', '.join(CALIB_METHODS)}")
    if quantization not in ("auto", "static", "dynamic"):
        raise KdedgeError(f"--quantization {quantization!r}: valid: auto, static, dynamic")
    ctx = _context(None, threads)
    requested = list(format_ or [])
    if int8:
        requested += [name for name in INT8_DEFAULT if name != "onnx-int8-trt" or _modelopt_available(ctx)]
    formats = parse_formats(requested or ["onnx"])
    settings = export_settings(run_dir, min_agreement=min_agreement, max_accuracy_drop=max_drop,
                               calib_images=calib_images, calib_method=calib_method)
    options = ExportOptions(
        formats=formats, models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        calib_images=settings.calib_images, calib_method=settings.calib_method,
        quantization=quantization,  # type: ignore[arg-type]
        thresholds=ParityThresholds(settings.min_agreement, settings.max_accuracy_drop),
        allow_drop=allow_drop, force=force)
    exports = export_run(run_dir, ctx, options)
    ctx.print(export_table(run_dir, exports))


def _modelopt_available(ctx) -> bool:
    from importlib.util import find_spec

    if find_spec("modelopt") is None:
        ctx.print("[yellow]note[/]: TensorRT-form INT8 (onnx-int8-trt) skipped: nvidia-modelopt is not installed; "
                  "pip install 'kdedge[modelopt]'")
        return False
    return True


@app.command()
@_user_errors
def bench(
    run_dir: Annotated[Path, typer.Argument(help="Run directory with exports (`kdedge export RUN --int8`).")],
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | jetson")] = "cpu",
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Comma list of torch, ort, ort-int8, trt "
                                                   "(default: every installed one for the device).")] = None,
    models: Annotated[Optional[str], typer.Option("--models", help="Comma list (default: every exported model).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size of the throughput measurement.")] = 64,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per round (5 rounds, interleaved).")] = 20,
    mc_samples: Annotated[int, typer.Option("--mc-samples", min=0, help="MC-dropout passes (0 skips).")] = 100,
    threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report JSON to stdout (tables go to stderr).")] = False,
    host: Annotated[Optional[str], typer.Option("--host", help="Run the bench on user@addr[:port] over SSH (your "
                                                "ssh config and keys; --device cpu or jetson there); the report "
                                                "comes back to RUN/bench.")] = None,
    ssh_option: Annotated[Optional[list[str]], typer.Option("--ssh-option", help="KEY=VALUE passed to ssh as -o "
                                                            "(repeatable), e.g. IdentityFile=~/.ssh/jetson.")] = None,
    connect_timeout: Annotated[float, typer.Option("--connect-timeout", min=1, help="Seconds to wait for --host "
                                                   "to answer.")] = 10.0,
    remote_kdedge: Annotated[str, typer.Option("--remote-kdedge", help="The kdedge command on --host, e.g. "
                                               "/home/me/venv/bin/kdedge.")] = "kdedge",
    remote_timeout: Annotated[float, typer.Option("--remote-timeout", min=1, help="Seconds allowed for each copy "
                                                  "and for the bench on --host.")] = 3600.0,
    test_data: Annotated[Optional[Path], typer.Option("--test-data", help="Bench on this test-split file instead "
                                                      "of the dataset (what --host sends to the device).")] = None,
) -> None:
    """Accuracy, NLL, ECE/MCE, size, MACs, latency and teacher/student ratios of every model and runtime."""
    from kdedge.bench.report import terminal_table
    from kdedge.stages.bench import BenchOptions, bench_run

    if device not in ("cpu", "cuda", "jetson"):
        raise KdedgeError(f"--device {device!r}: valid: cpu, cuda, jetson")
    if host is None:
        _check_local_device(device)
    elif test_data is not None:
        raise KdedgeError("--test-data is for the bench that --host starts on the device; give one or the other")
    ctx = _context(None, threads)
    if as_json:
        ctx = type(ctx)(console=Console(stderr=True), data_roots=ctx.data_roots)
    options = BenchOptions(device=device, runtimes=runtime, batch=batch, runs=runs, threads=threads,
                           mc_samples=mc_samples, test_data=test_data,
                           models=[m.strip() for m in models.split(",") if m.strip()] if models else None)
    if host is not None:
        from kdedge.bench.remote import RemoteOptions, bench_remote, parse_remote_kdedge, ssh_options
        from kdedge.remote.ssh import SshTarget

        remote = RemoteOptions(target=SshTarget.parse(host, extra_options=ssh_options(ssh_option or [])),
                               kdedge=parse_remote_kdedge(remote_kdedge), connect_timeout=connect_timeout,
                               timeout=remote_timeout)
        report = bench_remote(run_dir, ctx, options, remote)
    else:
        report = bench_run(run_dir, ctx, options)
    ctx.print(terminal_table(report))
    ctx.print(f"[green]report[/]: {run_dir / 'bench' / 'report.md'} (+ report.json, reliability PNGs)")
    if as_json:
        print(json.dumps(report, indent=2))


def _check_local_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise KdedgeError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    if device == "jetson":
        from kdedge.bench import jetson

        if not jetson.NV_TEGRA_RELEASE.exists():
            raise KdedgeError(f"--device jetson: this machine is not a Jetson (no {jetson.NV_TEGRA_RELEASE}); run "
                              "kdedge bench on the Jetson itself, or from here with --host user@addr")


@app.command()
@_user_errors
def calibrate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory made by `kdedge train`.")],
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fit the teacher's temperature T* by NLL on the validation split; report ECE before and after."""
    from kdedge.run import RunDir
    from kdedge.stages.calibration import calibrate_teacher

    ctx = _context(device, threads)
    result = calibrate_teacher(RunDir(run_dir), ctx)
    before, after = result["before"]["test"], result["after"]["test"]
    ctx.print(f"[bold green]calibrated[/]: T* = {result['temperature']:.4f}; test ECE {before['ece']:.4f} -> "
              f"{after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}")


@app.command()
@_user_errors
def show(run_dir: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Print a run's summary: data, stages, accuracy, calibration, timings."""
    from kdedge.run import RunDir
    from kdedge.summary import run_summary_table

    Console().print(run_summary_table(RunDir(run_dir)))


@app.command("list")
@_user_errors
def list_registered(
    what: Annotated[str, typer.Argument(help="models | datasets | formats")],
) -> None:
    """List the registered models or datasets, or the export formats."""
    from kdedge.data import DATASETS
    from kdedge.models import MODELS

    if what == "formats":
        from kdedge.export.formats import formats_table
        from kdedge.markdown import markdown_table

        print(markdown_table(["format", "file", "runtime", "what for", "install"], formats_table()))
        return
    registries = {"models": MODELS, "datasets": DATASETS}
    if what not in registries:
        raise KdedgeError(f"list: unknown kind {what!r}; allowed: {', '.join(registries)}, formats")
    for name in registries[what].names():
        print(name)


@recipe_app.command("check")
@_user_errors
def recipe_check(recipe_file: Annotated[Path, typer.Argument(help="YAML recipe.")]) -> None:
    """Validate a recipe without running anything."""
    from kdedge.recipe import load_recipe

    recipe = load_recipe(recipe_file, require_runs=False)
    print(f"{recipe_file}: ok (run {recipe.output_dir / recipe.name}, hash {recipe.hash})")
    if recipe.teacher.model is None:
        print(f"note: teacher.from_run {recipe.teacher.from_run} has no finished teacher yet; "
              "train it before `kdedge distill`")


@recipe_app.command("schema")
@_user_errors
def recipe_schema() -> None:
    """Print the recipe JSON schema (for editor completion and validation)."""
    from kdedge.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))


def main() -> None:
    try:
        # standalone_mode=False: usage errors come back to us and print as one line, like all errors
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # click's UsageError family (vendored by newer typer): duck-typed to avoid private imports
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        message = " ".join(exc.format_message().split())
        if message:  # empty when the help was shown because no arguments were given
            print(f"kdedge: error: {message} (see kdedge --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
