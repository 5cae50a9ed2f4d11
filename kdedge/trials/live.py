"""A live table of trials (rich Live): trial, status, test accuracy when done, the error when failed."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from kdedge.trials.trial import TrialOutcome

STYLES = {"pending": "dim", "running": "cyan", "done": "green", "reused": "green", "failed": "red"}


class TrialTable:
    """Rows keyed by trial name, redrawn in place while the trials run on a terminal; elsewhere (a log
    file, a pipe) printed once at the end; nothing without a console."""

    def __init__(self, names: list[str], console: Console | None, *, title: str = "trials") -> None:
        self.rows: dict[str, tuple[str, float | None, str | None]] = {name: ("pending", None, None) for name in names}
        self.title = title
        self.console = console
        live = console is not None and console.is_terminal
        self.live = Live(self.render(), console=console, refresh_per_second=4) if live else None

    def __enter__(self) -> "TrialTable":
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
        elif self.console is not None:
            self.console.print(self.render())

    def set(self, name: str, status: str, accuracy: float | None = None, error: str | None = None) -> None:
        self.rows[name] = (status, accuracy, error)
        if self.live is not None:
            self.live.update(self.render())

    def outcome(self, outcome: TrialOutcome) -> None:
        self.set(outcome.name, outcome.status, outcome.accuracy, outcome.error)

    def render(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        table.add_column("trial")
        table.add_column("status")
        table.add_column("test acc", justify="right")
        for name, (status, accuracy, error) in self.rows.items():
            shown = f"[{STYLES.get(status, '')}]{status}[/]"
            if error:
                shown += f": {escape(error)}"
            table.add_row(escape(name), shown, "—" if accuracy is None else f"{accuracy:.4f}")
        return table
