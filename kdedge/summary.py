"""A run's summary as a rich table, read from the manifest alone.

Metrics are rows and models are columns, so the table stays narrow (80 columns) as models are added.
"""

from __future__ import annotations

from typing import Any, Callable

from rich.table import Table

from kdedge.run import RunDir

Row = tuple[str, Callable[[dict[str, Any], dict[str, Any]], str]]

_ROWS: list[Row] = [
    ("model", lambda s, c: s["model"]),
    ("parameters", lambda s, c: f"{s['parameters']:,}"),
    ("epochs", lambda s, c: str(s["epochs"])),
    ("train time", lambda s, c: f"{s['train_time_s']:.1f} s"),
    ("test accuracy", lambda s, c: f"{s['test']['accuracy']:.4f}"),
    ("test NLL", lambda s, c: f"{s['test']['nll']:.4f}"),
    ("test ECE", lambda s, c: f"{s['test']['ece']:.4f}"),
    ("test MCE", lambda s, c: f"{s['test']['mce']:.4f}"),
    ("temperature T*", lambda s, c: f"{c['temperature']:.4f}" if c else "—"),
    ("test NLL at T*", lambda s, c: f"{c['test_nll_after']:.4f}" if c else "—"),
    ("test ECE at T*", lambda s, c: f"{c['test_ece_after']:.4f}" if c else "—"),
]


def run_summary_table(run: RunDir) -> Table:
    manifest = run.read_manifest()
    data = manifest.get("data", {})
    stages = manifest.get("stages", {})
    table = Table(title=f"run {manifest['recipe']['name']}",
                  caption=(f"{data.get('dataset', '?')}: {data.get('n_train', '?')} train / "
                           f"{data.get('n_val', '?')} val / {data.get('n_test', '?')} test"))
    table.add_column("", no_wrap=True)
    columns = []
    teacher = stages.get("teacher")
    if teacher and teacher.get("status") == "complete":
        columns.append(("teacher", teacher, stages.get("calibration")))
    for name, _, _ in columns:
        table.add_column(name, justify="right", no_wrap=True)
    if not columns:
        table.add_column("status")
        table.add_row("teacher", "not trained yet: run `kdedge train RECIPE`")
        return table
    for label, cell in _ROWS:
        table.add_row(label, *(cell(stage, cal or {}) for _, stage, cal in columns))
    return table
