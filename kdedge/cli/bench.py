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
from kdedge.cli.app import app, stage_context, user_errors
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
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for every runtime (default 1: stable, "
                                         "comparable numbers on a small or shared machine; see README, Bench).")] = 1,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Recommendation: at most this many accuracy points "
                                            "below the teacher's fp32 accuracy.")] = 1.0,
    max_ece: Annotated[Optional[float], typer.Option("--max-ece", help="Recommendation: at most this test ECE "
                                                     "(0-1).")] = None,
    budget_ms: Annotated[Optional[float], typer.Option("--budget-ms", help="Recommendation: at most this median "
                                                       "latency (ms) per batch of --budget-batch images.")] = None,
    budget_batch: Annotated[int, typer.Option("--budget-batch", help="Batch size of the latency budget and of "
                                              "'fastest' (timed if it is not 1 or --batch).")] = 1,
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
    ood: Annotated[Optional[str], typer.Option("--ood", help="Out-of-distribution evidence: AUROC of entropy and "
                                               "max-probability, test split vs this dataset (e.g. mnist_5k, digits) "
                                               "or image folder, converted to the model's input.")] = None,
) -> None:
    """Accuracy, NLL, ECE/MCE, size, MACs, latency and teacher/student ratios of every model and runtime."""
    from kdedge.bench.report import terminal_table
    from kdedge.bench.timing import stability_advice
    from kdedge.stages.bench import BenchOptions, bench_run

    limits = _limits(max_drop, max_ece, budget_ms, budget_batch, threads)
    if host is None:
        _check_local_device(device)
    elif test_data is not None:
        raise KdedgeError("--test-data is for the bench that --host starts on the device; give one or the other")
    elif ood is not None:
        raise KdedgeError("--ood is measured here, not over --host; run `kdedge bench RUN --ood ...` without --host")
    if ood is not None:
        from kdedge.bench.ood import check_ood_spec

        check_ood_spec(ood)  # a bad value fails before minutes of measuring
    ctx = stage_context(None, threads)
    if as_json:
        ctx = dataclasses.replace(ctx, console=Console(stderr=True))  # stdout carries only the JSON
    options = BenchOptions(device=device, runtimes=runtime, batch=batch, runs=runs, threads=threads,
                           mc_samples=mc_samples, mupe_masks=mupe_masks, test_data=test_data, limits=limits, ood=ood,
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
    ctx.print(f"[green]report[/]: {escape(str(run_dir / 'bench' / 'report.md'))} (+ report.json, tradeoff and "
              "reliability PNGs)")
    notes = report.get("timing_notes") or []
    if notes:
        more = f"; and {len(notes) - 3} more (report.md)" if len(notes) > 3 else ""
        advice = stability_advice(report.get("threads"))
        ctx.print(f"[yellow]unstable timings[/]: {escape('; '.join(notes[:3]) + more)}; {advice}")
    rec = report.get("recommendation") or {}
    for i, line in enumerate(str(x) for x in rec.get("lines") or []):  # what to ship: the last thing printed
        ctx.print(("[bold green]" if i == 0 else "") + escape(line) + ("[/]" if i == 0 else ""))
    if as_json:
        print(json.dumps(report, indent=2))


def _limits(max_drop: float, max_ece: float | None, budget_ms: float | None, budget_batch: int, threads: int):
    """The recommendation's limits, each checked: a bad value is a one-line error naming the option."""
    import math

    from kdedge.bench.recommend import Limits

    if not math.isfinite(max_drop) or not 0 <= max_drop <= 100:
        raise KdedgeError(f"--max-drop {max_drop:g}: accuracy points below the teacher, between 0 and 100 (e.g. 1)")
    if max_ece is not None and (not math.isfinite(max_ece) or not 0 < max_ece <= 1):
        raise KdedgeError(f"--max-ece {max_ece:g}: an expected calibration error, above 0 and at most 1 (e.g. 0.05)")
    if budget_ms is not None and (not math.isfinite(budget_ms) or budget_ms <= 0):
        raise KdedgeError(f"--budget-ms {budget_ms:g}: a latency in milliseconds above 0 (e.g. 5)")
    if budget_batch < 1:
        raise KdedgeError(f"--budget-batch {budget_batch}: a batch size of at least 1")
    if threads < 1:
        raise KdedgeError(f"--threads {threads}: at least 1")
    return Limits(max_drop=max_drop, max_ece=max_ece, budget_ms=budget_ms, budget_batch=budget_batch)


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
