"""The Ray backend: each trial is a Ray Tune trial (a function trainable that runs kdedge's stage in the
worker), `--cpus-per-trial`/`--gpus-per-trial` its resources, a live table of trials in the terminal.

With no address a one-machine Ray is started for the command and stopped after it, every socket bound to
127.0.0.1 (Ray binds all interfaces unless it is told it is not a cluster). `--address auto|HOST:PORT`
joins a running cluster instead (`ray start --head` on one node, `ray start --address ...` on the others);
kdedge must be installed on every node and the run directories must be on a filesystem they all share.
Only kdedge.trials.make_backend imports this module, once it has checked that Ray Tune is installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import ray
from ray import tune
from ray._private import ray_constants
from rich.markup import escape

from kdedge.errors import KdedgeError
from kdedge.stages.context import StageContext
from kdedge.trials.live import TrialTable
from kdedge.trials.trial import Stage, Trial, TrialOutcome, finished, metric, one_line, run_trial

# Ray's "not a cluster" switch: the node's address is then 127.0.0.1 and every server binds it alone
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# no usage report over the network, and Tune's plain (silent at verbose=0) output: kdedge draws the table
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0"}


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def ray_session(address: str | None, ctx: StageContext) -> Iterator[float]:
    """Ray for the block: a one-machine Ray on 127.0.0.1 (no address), or the cluster at `address`.
    Yields the seconds ray.init took; a Ray this command started is shut down after it."""
    env = {**{k: os.environ.get(k, v) for k, v in QUIET_ENV.items()}, **(LOOPBACK_ENV if address is None else {})}
    cluster = ray_constants.ENABLE_RAY_CLUSTER  # read from the environment when ray was imported
    with _environment(env):
        ray_constants.ENABLE_RAY_CLUSTER = address is not None
        try:
            with _ray(address, ctx) as seconds:
                yield seconds
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = cluster


@contextmanager
def _ray(address: str | None, ctx: StageContext) -> Iterator[float]:
    own = not ray.is_initialized()
    started = time.perf_counter()
    if own:
        options: dict[str, Any] = {"_node_ip_address": "127.0.0.1"} if address is None else {}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=True,
                     logging_level=logging.WARNING, **options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise KdedgeError(f"--address {address or '(local)'}: Ray did not start or connect ({one_line(exc)}); "
                              "give the head node's HOST:PORT, or leave --address out for a one-machine Ray") from None
    seconds = time.perf_counter() - started
    where = "a one-machine Ray on 127.0.0.1" if address is None else f"the Ray cluster at {address}"
    resources = ray.cluster_resources()
    ctx.print(f"[cyan]ray[/]: {where}, {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs "
              f"(ready in {seconds:.1f} s)")
    try:
        yield seconds
    finally:
        if own:
            ray.shutdown()


def _trainable(config: dict[str, Any], *, trials: dict[str, Trial], stage: Stage, settings: dict[str, Any]) -> None:
    """One trial in a Ray worker: kdedge's stage in process, the outcome reported as Tune metrics."""
    trial = trials[config["trial"]]
    if Path(settings["cwd"]).is_dir():
        os.chdir(settings["cwd"])  # Tune starts workers in a directory of its own; recipes' paths are relative
        import torch

        torch.set_num_threads(settings["threads"])
        ctx = StageContext(data_roots=tuple(Path(p) for p in settings["data_roots"]),
                           device_override=settings["device"])
        outcome = run_trial(trial, stage, ctx, resume=settings["resume"])
    else:
        outcome = TrialOutcome(trial.name, trial.root, "failed",
                               error=f"{settings['cwd']}: no such directory on this node; the run directories must "
                                     "be on a filesystem every node of the cluster shares")
    tune.report({"status": outcome.status, "error": outcome.error or "", "test_accuracy": metric(outcome.accuracy)})


@dataclass(frozen=True)
class RayBackend:
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    name = "ray"

    def run(self, trials: list[Trial], stage: Stage, ctx: StageContext, *, resume: bool) -> list[TrialOutcome]:
        outcomes: dict[str, TrialOutcome | None] = {t.name: finished(t) for t in trials}
        todo = [t for t in trials if outcomes[t.name] is None]
        table = TrialTable([t.name for t in trials], ctx.console, title=f"trials on Ray ({len(todo)} to run)")
        for outcome in outcomes.values():
            if outcome is not None:
                table.outcome(outcome)
        with table:
            if todo:
                with ray_session(self.address, ctx):
                    outcomes.update(self._tune(todo, stage, ctx, resume, table))
        for outcome in outcomes.values():
            if outcome is not None and not outcome.ok:
                ctx.print(f"[red]trial {escape(outcome.name)} failed[/]: {escape(outcome.error or '')}")
        return [outcomes[t.name] for t in trials]

    def _tune(self, todo: list[Trial], stage: Stage, ctx: StageContext, resume: bool,
              table: TrialTable) -> dict[str, TrialOutcome]:
        by_key = {str(i): trial for i, trial in enumerate(todo)}
        settings = {"cwd": os.getcwd(), "data_roots": [str(p) for p in ctx.data_roots], "resume": resume,
                    "device": ctx.device_override,
                    "threads": max(1, int(self.cpus_per_trial)) if self.cpus_per_trial >= 1 else 1}
        # Tune's own records (experiment state, per-trial logs) stay beside the trials, then are removed
        storage = Path(os.path.commonpath([t.root.resolve().parent for t in todo])) / ".ray-tune"
        experiment = f"kdedge-{os.getpid()}-{int(time.time())}"
        trainable = tune.with_resources(tune.with_parameters(_trainable, trials=by_key, stage=stage, settings=settings),
                                        {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial})
        tuner = tune.Tuner(trainable, param_space={"trial": tune.grid_search(list(by_key))},
                           tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(storage_path=str(storage), name=experiment, verbose=0,
                                                     callbacks=[LiveTable(table, by_key)],
                                                     failure_config=tune.FailureConfig(max_failures=0)))
        try:
            grid = tuner.fit()
        finally:
            shutil.rmtree(storage / experiment, ignore_errors=True)
            if storage.is_dir() and not any(storage.iterdir()):
                storage.rmdir()
        out: dict[str, TrialOutcome] = {}
        for result in grid:
            trial = by_key[result.config["trial"]]
            metrics = result.metrics or {}
            if result.error is not None or "status" not in metrics:
                cause = getattr(result.error, "cause", None) or result.error
                error = f"Ray: {one_line(cause)}" if cause else "Ray: the trial reported no result"
                out[trial.name] = TrialOutcome(trial.name, trial.root, "failed", error=error)
            else:
                accuracy = metrics.get("test_accuracy")
                out[trial.name] = TrialOutcome(trial.name, trial.root, metrics["status"], metrics["error"] or None,
                                               None if accuracy is None or accuracy != accuracy else accuracy)
            table.outcome(out[trial.name])
        return out


class LiveTable(tune.Callback):
    """Keeps the live table up to date (Tune calls it in this process)."""

    def __init__(self, table: TrialTable, by_key: dict[str, Trial]) -> None:
        self.table, self.by_key = table, by_key

    def __getstate__(self) -> dict:  # Tune pickles its run config; the terminal stays here
        return {}

    def _name(self, trial: Any) -> str:
        return self.by_key[trial.config["trial"]].name

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.table.set(self._name(trial), "running")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        accuracy = result.get("test_accuracy")
        self.table.set(self._name(trial), result.get("status", "running"),
                       None if accuracy is None or accuracy != accuracy else accuracy, result.get("error") or None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.table.set(self._name(trial), "failed", error="Ray: the worker failed")
