"""One trial: a recipe run in its own run directory by a stage function of kdedge.stages, in this process.

Every backend runs trials through `run_trial`, so a trial does the same work wherever it runs, and the
run directory's own reuse rules (recipe hash, finished stages) apply to it. A trial that fails becomes a
failed outcome carrying its error in one line; it never takes the other trials down with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kdedge.errors import KdedgeError
from kdedge.io import write_json
from kdedge.ranks import launched
from kdedge.recipe import Recipe, recipe_from_dict
from kdedge.run import RunDir, lock_recipe_run, mark_own_stages_stopped, open_run
from kdedge.stages.context import StageContext

# what a finished trial leaves in its run directory: a later sweep reuses it without starting a worker
RESULT_FILE = "trial.json"
# the stage whose test accuracy stands for the trial in tables, the first one the run has
HEADLINE_STAGES = ("student", "teacher")
MAX_ERROR_CHARS = 400

# a stage of kdedge.stages: (recipe, planned run, context, *, resume) -> anything (e.g. stages.distill.distill)
Stage = Callable[..., Any]


class TrialsFailed(KdedgeError):
    """Some trials failed; the others' results were written. Not a usage error, hence exit code 1."""

    exit_code = 1


@dataclass(frozen=True)
class Trial:
    name: str                 # how tables show it (a sweep value, "seed 1")
    recipe: dict[str, Any]    # the recipe's dict; its output_dir/name is `root`
    root: Path                # the trial's own run directory

    @classmethod
    def of(cls, name: str, recipe: Recipe) -> "Trial":
        return cls(name, recipe.to_dict(), recipe.output_dir / recipe.name)


@dataclass(frozen=True)
class TrialOutcome:
    name: str
    root: Path
    status: str               # "done", "reused" or "failed"
    error: str | None = None
    accuracy: float | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def one_line(exc: BaseException) -> str:
    """An exception as one short line: a KdedgeError's message as written, anything else with its type."""
    text = exc.message if isinstance(exc, KdedgeError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def headline_accuracy(root: Path) -> float | None:
    try:
        stages = RunDir(root).read_manifest().get("stages", {})
    except KdedgeError:
        return None
    for stage in HEADLINE_STAGES:
        record = stages.get(stage)
        if isinstance(record, dict) and record.get("status") == "complete" and "test" in record:
            return float(record["test"]["accuracy"])
    return None


def finished(trial: Trial) -> TrialOutcome | None:
    """The outcome of a trial already finished by the same recipe (its result file and manifest say so)."""
    try:
        recipe = recipe_from_dict(trial.recipe, source=f"trial {trial.name}")
        manifest = RunDir(trial.root).read_manifest()
        marker = json.loads((trial.root / RESULT_FILE).read_text(encoding="utf-8"))
    except (KdedgeError, OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("recipe_hash") != recipe.hash \
            or manifest.get("recipe_hash") != recipe.hash:
        return None
    return TrialOutcome(trial.name, trial.root, "reused", accuracy=headline_accuracy(trial.root))


def run_trial(trial: Trial, stage: Stage, ctx: StageContext, *, resume: bool = True) -> TrialOutcome:
    """Run `stage` on the trial's recipe in its run directory (locked for the time). Only Ctrl-C escapes:
    every other failure is the trial's outcome, with its error."""
    try:
        recipe = recipe_from_dict(trial.recipe, source=f"trial {trial.name}")
        if recipe.output_dir / recipe.name != trial.root:
            raise KdedgeError(f"trial {trial.name}: its recipe writes to {recipe.output_dir / recipe.name}, "
                              f"not to its run directory {trial.root}")
        with lock_recipe_run(recipe):
            planned = open_run(recipe, None, force=False)
            stage(recipe, planned, ctx, resume=resume)
            accuracy = headline_accuracy(trial.root)
            write_json(trial.root / RESULT_FILE, {"trial": trial.name, "recipe_hash": recipe.hash,
                                                  "test_accuracy": accuracy})
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 -- a trial's failure, whatever it is, is reported, not raised
        if launched():  # a data-parallel rank cannot skip ahead of the others: the whole run stops
            raise
        error = one_line(exc)
        _mark_failed(trial.root, error)
        return TrialOutcome(trial.name, trial.root, "failed", error=error)
    return TrialOutcome(trial.name, trial.root, "done", accuracy=accuracy)


def _mark_failed(root: Path, error: str) -> None:
    """Best effort: the stages this process left "running" in the trial's run say it failed, and why."""
    mark_own_stages_stopped(root, "failed", error)


def metric(value: float | None) -> float:
    """A metric for a backend that wants numbers (NaN where there is none)."""
    return math.nan if value is None else float(value)
