"""`kdedge bench RUN --host user@addr`: the same benchmark, run on another machine (a Jetson) over SSH.

1. here: check the run has exports, the host answers within --connect-timeout, and kdedge is installed
   there (with `bench --test-data`);
2. stage a bundle: manifest.json, the models' weights (torch runtime, MACs, MC dropout), their exports
   (not TensorRT engines: those are built on the device) and the test split as one checked file, so
   the device needs no dataset;
3. copy it into a fresh `mktemp -d` there, run `kdedge bench` there on it, copy its bench/ back;
4. put it in place as RUN/bench (a new directory renamed over the old one: a failure leaves the old
   report whole), with `host` recorded; the remote temp directory is removed in every case.

Every ssh call goes through kdedge.remote.ssh: argument lists, the user's own ssh config and keys,
BatchMode (no prompt), nothing stored.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kdedge.bench.runtimes import verified_export
from kdedge.bench.split_file import SPLIT_FILE, write_split
from kdedge.choices import REMOTE_BENCH_DEVICES
from kdedge.errors import KdedgeError
from kdedge.io import write_json
from kdedge.layout import MODEL_FILE, run_file
from kdedge.remote import ssh
from kdedge.remote.fetch_report import fetch_report
from kdedge.remote.target import SshTarget
from kdedge.run import MANIFEST, RunDir
from kdedge.stages.bench import BenchOptions, dataset_split, exported_models, limit_args
from kdedge.stages.context import StageContext

NOT_SENT = ("engine",)        # a TensorRT engine only runs on the GPU that built it
BUNDLE_DIR = "run"            # the run's name on the device, inside the remote temp directory
_TEMP_PREFIX = "kdedge-bench."
_INSTALL = "`pip install kdedge` there (in the Python that runs it), or pass --remote-kdedge /path/to/bin/kdedge"


@dataclass(frozen=True)
class RemoteOptions:
    target: SshTarget
    kdedge: tuple[str, ...] = ("kdedge",)     # the command that runs kdedge there (an argv prefix)
    connect_timeout: float = 10.0
    timeout: float = 3600.0                   # each copy, and the remote bench (TensorRT builds take minutes)


def parse_remote_kdedge(text: str) -> tuple[str, ...]:
    """--remote-kdedge: a command split like a shell would ("python3 -m kdedge.cli" works), never run by one here."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise KdedgeError(f"--remote-kdedge {text!r}: {exc}; give a command such as /home/me/venv/bin/kdedge") from None
    if not argv:
        raise KdedgeError("--remote-kdedge: empty; give a command such as /home/me/venv/bin/kdedge")
    return argv


def ssh_options(values: Sequence[str]) -> tuple[str, ...]:
    """--ssh-option KEY=VALUE (repeatable) -> ssh's -o KEY=VALUE; ssh itself checks the key."""
    out: list[str] = []
    for value in values:
        key, eq, _ = value.partition("=")
        if not eq or not key.isalnum():
            raise KdedgeError(f"--ssh-option {value!r}: write KEY=VALUE, e.g. --ssh-option IdentityFile=~/.ssh/jetson")
        out += ["-o", value]
    return tuple(out)


def bench_remote(run_root: Path, ctx: StageContext, options: BenchOptions, remote: RemoteOptions) -> dict[str, Any]:
    if options.device not in REMOTE_BENCH_DEVICES:
        raise KdedgeError(f"--device {options.device} with --host: valid: {', '.join(REMOTE_BENCH_DEVICES)} "
                          "(for a CUDA machine, run `kdedge bench RUN --device cuda` on it: engines are built "
                          "where they run)")
    run, manifest, exports, stages = exported_models(run_root, options.models)
    target = remote.target
    ssh.check_reachable(target, remote.connect_timeout)
    _check_remote_kdedge(remote)
    with tempfile.TemporaryDirectory(prefix="kdedge-bundle-") as tmp:
        bundle = _stage_bundle(run, manifest, stages, Path(tmp) / BUNDLE_DIR, ctx)
        remote_tmp = _remote_mkdtemp(remote)
        try:
            ctx.print(f"[cyan]{escape(str(target))}[/]: sending {_mb(bundle)} MB ({', '.join(stages)}) "
                      f"to {escape(str(remote_tmp))}")
            ssh.copy_to(target, [bundle], remote_tmp, timeout=remote.timeout)
            remote_run = posixpath.join(remote_tmp, BUNDLE_DIR)
            # its output comes back when it ends; a spinner with the elapsed time shows it is still going
            with _spinner(ctx, f"[cyan]{escape(str(target))}[/]: running kdedge bench --device {options.device} there "
                               "(TensorRT engine builds take minutes)"):
                _run_remote_bench(remote, remote_run, stages, options)
            return fetch_report(target, remote_run, run_root, timeout=remote.timeout)
        finally:
            _remove_remote(remote, remote_tmp, ctx)


@contextlib.contextmanager
def _spinner(ctx: StageContext, message: str) -> Iterator[None]:
    if ctx.console is None:
        yield
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=ctx.console, transient=True)
    with progress:
        progress.add_task(message, total=None)
        yield
    ctx.print(f"{message}: done")


def _check_remote_kdedge(remote: RemoteOptions) -> None:
    """kdedge must be there, and new enough to take --test-data (what the bundle needs)."""
    probe = [*remote.kdedge, "bench", "--help"]
    proc = ssh.run(remote.target, probe, timeout=max(60.0, remote.connect_timeout),
                   connect_timeout=remote.connect_timeout)
    if proc.returncode in (126, 127):  # the remote shell: not found / not executable
        raise KdedgeError(f"kdedge is not installed on {remote.target} ({_last_line(proc.stderr) or shlex.join(probe)});"
                          f" {_INSTALL}")
    if proc.returncode != 0:
        raise KdedgeError(f"`{shlex.join(probe)}` failed on {remote.target} (exit {proc.returncode}: "
                          f"{_last_line(proc.stderr) or 'no message'}); {_INSTALL}")
    if "--test-data" not in proc.stdout:
        raise KdedgeError(f"the kdedge on {remote.target} is too old for --host (its bench has no --test-data); "
                          "`pip install -U kdedge` there")


def _stage_bundle(run: RunDir, manifest: dict[str, Any], stages: list[str], bundle: Path,
                  ctx: StageContext) -> Path:
    """The part of the run a remote bench reads, plus the test split; nothing else leaves this machine."""
    exports = manifest["exports"]
    sent: dict[str, dict[str, Any]] = {}
    for stage in stages:
        (bundle / stage).mkdir(parents=True)
        shutil.copy2(_own_model_file(run, stage), bundle / stage / MODEL_FILE)
        for fmt in exports.get(stage, {}):
            if fmt in NOT_SENT:
                continue
            # the manifest's path must name a regular file inside the run (else it could send any local
            # file, or write one anywhere through a `../` in the bundle's copy of that path)
            relative = exports[stage][fmt].get("file") if isinstance(exports[stage][fmt], dict) else None
            run_file(run.root, relative, what=f"exports.{stage}.{fmt}.file")
            src = verified_export(run.root, exports, stage, fmt)  # a changed export is refused here, not there
            dst = bundle.joinpath(*PurePosixPath(relative).parts)  # checked above: relative, no '..'
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            sent.setdefault(stage, {})[fmt] = exports[stage][fmt]
    split, classes = dataset_split(run, manifest, ctx)
    write_split(bundle / SPLIT_FILE, split, classes)
    write_json(bundle / MANIFEST, {**manifest, "exports": sent})
    return bundle


def _own_model_file(run: RunDir, stage: str) -> Path:
    """RUN/stage/model.pt if it is the run's own regular file: a symlink would send what it points at."""
    path = run.stage_dir(stage) / MODEL_FILE
    try:
        info = os.lstat(path)
        inside = Path(os.path.realpath(path.parent)) == Path(os.path.realpath(run.root)) / stage
    except OSError as exc:
        raise KdedgeError(f"{path}: cannot read it ({exc.strerror}); retrain with `kdedge distill RECIPE --force`") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode) or not inside:
        raise KdedgeError(f"{path}: not a regular file of the run (a symlink, or in a linked directory); only the "
                          "run's own files are sent to a device: put the model file itself there, or retrain "
                          "with `kdedge distill RECIPE --force`")
    return path


def _remote_mkdtemp(remote: RemoteOptions) -> str:
    proc = ssh.run(remote.target, ["mktemp", "-d", "-t", _TEMP_PREFIX + "XXXXXXXX"], timeout=60,
                   connect_timeout=remote.connect_timeout)
    path = proc.stdout.strip()
    if proc.returncode != 0 or not _is_our_temp(path):
        raise KdedgeError(f"cannot make a temp directory on {remote.target} with mktemp -d "
                          f"({_last_line(proc.stderr) or path or 'no output'}); is /tmp writable there?")
    return path


def _is_our_temp(path: str) -> bool:
    return (path.startswith("/") and "\n" not in path and posixpath.basename(path).startswith(_TEMP_PREFIX)
            and posixpath.normpath(path) == path)


def _run_remote_bench(remote: RemoteOptions, remote_run: str, stages: list[str], options: BenchOptions) -> None:
    argv = [*remote.kdedge, "bench", remote_run, "--device", options.device,
            "--test-data", posixpath.join(remote_run, SPLIT_FILE), "--models", ",".join(stages),
            "--batch", str(options.batch), "--runs", str(options.runs), "--mc-samples", str(options.mc_samples),
            "--mupe-masks", options.mupe_masks]
    if options.runtimes:
        argv += ["--runtime", options.runtimes]
    if options.threads:
        argv += ["--threads", str(options.threads)]
    argv += limit_args(options.limits)  # the device's report carries the recommendation for these limits
    proc = ssh.run(remote.target, argv, timeout=remote.timeout, connect_timeout=remote.connect_timeout)
    if proc.returncode != 0:
        raise KdedgeError(f"kdedge bench on {remote.target} failed (exit {proc.returncode}): {_remote_error(proc)}")


def _remove_remote(remote: RemoteOptions, remote_tmp: str, ctx: StageContext) -> None:
    """Best effort, also after a failure or Ctrl-C: a leftover directory is named, not fatal."""
    if not _is_our_temp(remote_tmp):  # never rm -rf anything but the directory mktemp gave us
        return
    try:
        proc = ssh.run(remote.target, ["rm", "-rf", "--", remote_tmp], timeout=120,
                       connect_timeout=remote.connect_timeout)
        ok = proc.returncode == 0
    except (KdedgeError, OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        ctx.print(f"[yellow]note[/]: could not remove {escape(str(remote_tmp))} on {escape(str(remote.target))}; "
                  "delete it by hand")


def _remote_error(proc: subprocess.CompletedProcess[str]) -> str:
    """kdedge's own one-line error if it printed one, else the last line (e.g. of a traceback)."""
    for line in reversed(proc.stderr.splitlines()):
        if line.startswith("kdedge: error: "):
            return line[len("kdedge: error: "):].strip()
    return _last_line(proc.stderr) or _last_line(proc.stdout) or "no message"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _mb(path: Path) -> str:
    return f"{sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) / 1e6:.1f}"
