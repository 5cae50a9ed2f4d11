"""The local backend: the trials one after another in this process (what `kdedge sweep` always did)."""

from __future__ import annotations

from rich.markup import escape

from kdedge.stages.context import StageContext
from kdedge.trials.trial import Stage, Trial, TrialOutcome, finished, run_trial


class LocalBackend:
    name = "local"

    def run(self, trials: list[Trial], stage: Stage, ctx: StageContext, *, resume: bool) -> list[TrialOutcome]:
        outcomes = []
        for trial in trials:
            outcome = finished(trial)
            if outcome is not None:
                ctx.print(f"[green]trial[/] {escape(trial.name)}: reusing the finished run {escape(str(trial.root))}")
            else:
                ctx.print(f"[bold cyan]trial[/] {escape(trial.name)} -> {escape(str(trial.root))}")
                outcome = run_trial(trial, stage, ctx, resume=resume)
            if not outcome.ok:
                ctx.print(f"[red]trial {escape(trial.name)} failed[/]: {escape(outcome.error or '')}")
            outcomes.append(outcome)
        return outcomes
