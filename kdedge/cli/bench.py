"""`kdedge bench`: every exported model on every runtime, here or on a device over SSH (--host).

Imports only what measuring needs: the command also runs on a Jetson that never trains."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from kdedge.choices import BenchDevice, MupeMasks
from kdedge.cli.app import ThreadsOpt, app, stage_context, user_errors
from kdedge.errors import KdedgeError


@app.command()
@user_errors
def bench(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory with exports (`kdedge export RUN --int8`).")],
    device: Annotated[BenchDevice, typer.Option("--device", help="Where to measure.")] = "cpu",
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Comma list of runtimes (`kdedge list runtimes`; "
                                                   "default: every installed default one for the device).")] = None,
    models: Annotated[Optional[str], typer.Option("--models", help="Comma list (default: every exported model).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size of the throughput measurement.")] = 64,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per round (5 rounds, interleaved).")] = 20,
    mc_samples: Annotated[int, typer.Option("--mc-samples", min=0, help="MC-dropout passes (0 skips).")] = 100,
    mupe_masks: Annotated[MupeMasks, typer.Option("--mupe-masks", help="Dropout masks behind MUPE: independent "
                                                  "(each model its own, seed 000) or shared (identical where "
                                                  "shapes match: lower variance, not comparable).")] = "independent",
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

    if host is None:
        _check_local_device(device)
    elif test_data is not None:
        raise KdedgeError("--test-data is for the bench that --host starts on the device; give one or the other")
    ctx = stage_context(None, threads)
    if as_json:
        ctx = dataclasses.replace(ctx, console=Console(stderr=True))  # stdout carries only the JSON
    options = BenchOptions(device=device, runtimes=runtime, batch=batch, runs=runs, threads=threads,
                           mc_samples=mc_samples, mupe_masks=mupe_masks, test_data=test_data,
                           models=[m.strip() for m in models.split(",") if m.strip()] if models else None)
    if host is not None:
        from kdedge.remote.bench_job import RemoteOptions, bench_remote, parse_remote_kdedge, ssh_options
        from kdedge.remote.target import SshTarget

        remote = RemoteOptions(target=SshTarget.parse(host, extra_options=ssh_options(ssh_option or [])),
                               kdedge=parse_remote_kdedge(remote_kdedge), connect_timeout=connect_timeout,
                               timeout=remote_timeout)
        from kdedge.lock import run_lock

        with run_lock(run_dir):  # one writer per run: the report comes back into RUN/bench
            report = bench_remote(run_dir, ctx, options, remote)
    else:
        report = bench_run(run_dir, ctx, options)
    ctx.print(terminal_table(report))
    ctx.print(f"[green]report[/]: {escape(str(run_dir / 'bench' / 'report.md'))} (+ report.json, reliability PNGs)")
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
