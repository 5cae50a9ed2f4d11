"""A run's summary for `kdedge show` and `kdedge distill`: the models table, read from the manifest alone,
then (show) the exports recorded there and the bench report in RUN/bench.

Metrics are rows and models are columns, so the table stays narrow (80 columns) as models are added.
Names and paths from the run are escaped: rich would read `[...]` in them as markup.
"""

from __future__ import annotations

from pathlib import Path

import json
from typing import Any, Callable

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from kdedge.layout import BASELINE, QAT_STUDENT, STUDENT, TEACHER
from kdedge.run import RunDir

Row = tuple[str, Callable[[dict[str, Any], dict[str, Any]], str]]

_ROWS: list[Row] = [
    ("model", lambda s, c: s["model"]),
    ("trained on", lambda s, c: _trained_on(s)),
    ("training images", lambda s, c: f"{s['train_images']:,}" if "train_images" in s else "—"),
    ("parameters", lambda s, c: f"{s['parameters']:,}"),
    ("epochs", lambda s, c: "—" if "source" in s else str(s["epochs"])),
    ("train time", lambda s, c: "—" if "source" in s else f"{s['train_time_s']:.1f} s"),
    ("test accuracy", lambda s, c: f"{s['test']['accuracy']:.4f}"),
    ("test NLL", lambda s, c: f"{s['test']['nll']:.4f}"),
    ("test ECE", lambda s, c: f"{s['test']['ece']:.4f}"),
    ("test MCE", lambda s, c: f"{s['test']['mce']:.4f}"),
    ("temperature T*", lambda s, c: f"{c['temperature']:.4f}" if c else "—"),
    ("test NLL at T*", lambda s, c: f"{c['test_nll_after']:.4f}" if c else "—"),
    ("test ECE at T*", lambda s, c: f"{c['test_ece_after']:.4f}" if c else "—"),
]


COLUMNS = (TEACHER, BASELINE, STUDENT, QAT_STUDENT)  # left to right: no KD, KD, KD under simulated INT8


def kd_label(kd: dict[str, Any]) -> str:
    """e.g. 'hinton T=4 a=0.5' — short enough for a table cell."""
    parts = []
    for loss in kd["losses"]:
        bits = [loss["name"]]
        if "temperature" in loss:
            bits.append(f"T={loss['temperature']:.3g}")
        if "alpha" in loss:
            bits.append(f"a={loss['alpha']:g}")
        if loss["name"] == "hint":
            bits.append(f"{loss['student']}->{loss['teacher']}")
        if loss.get("weight", 1.0) != 1.0:
            bits.append(f"w={loss['weight']:g}")
        parts.append(" ".join(bits))
    return " + ".join(parts)


def run_summary_table(run: RunDir) -> Table:
    manifest = run.read_manifest()
    data = manifest.get("data", {})
    stages = manifest.get("stages", {})
    table = Table(title=f"run {manifest['recipe']['name']}",
                  caption=(f"{data.get('dataset', '?')}: {data.get('n_train', '?')} train / "
                           f"{data.get('n_val', '?')} val / {data.get('n_test', '?')} test"))
    table.add_column("", no_wrap=True)
    columns = []
    for name in COLUMNS:
        stage = stages.get(name)
        if stage and stage.get("status") == "complete":
            columns.append((name, stage, stages.get("calibration") if name == TEACHER else None))
    for name, _, _ in columns:
        table.add_column(name, justify="right", no_wrap=True)
    if not columns:
        table.add_column("status")
        table.add_row("teacher", "not trained yet: run `kdedge train RECIPE`")
        return table
    for label, cell in _ROWS:
        table.add_row(label, *(_cell(cell, stage, cal or {}) for _, stage, cal in columns))
    return table


def _trained_on(stage: dict[str, Any]) -> str:
    if "source" in stage:  # a teacher the user brought: trained elsewhere
        return f"elsewhere ({stage['source']['kind']}: {Path(stage['source']['path']).name})"
    return "hard labels" if stage.get("kd") is None else "KD: " + kd_label(stage["kd"])


def _cell(cell: Callable[[dict[str, Any], dict[str, Any]], str], stage: dict, cal: dict) -> str:
    try:
        return escape(cell(stage, cal))
    except (KeyError, TypeError, ValueError):  # a field missing or of the wrong type in a hand-edited manifest
        return "?"


def exports_table(run: RunDir) -> Table | str:
    """The exports recorded in the manifest: file, size and the parity gate of each model x format."""
    exports = run.read_manifest().get("exports") or {}
    if not exports:
        return "exports: none yet (`kdedge export RUN --int8`)"
    table = Table(title="exports (parity with the fp32 model on the test split)")
    for column in ("model", "format", "file", "KiB", "agree", "Δ pt", "gate", "INT8 route"):
        table.add_column(column, justify="right" if column in ("KiB", "agree", "Δ pt") else "left")
    notes = []
    for stage, formats in exports.items():
        for name, entry in formats.items():
            table.add_row(*(escape(v) for v in (stage, name, *_export_cells(stage, name, entry))))
            layers = _fp32_layers(entry)
            if layers:  # below the table: names are too long for a cell
                notes.append(escape(f"{stage} {name}: {_export_cells(stage, name, entry, long=True)[-1]}, "
                                    f"in fp32: {', '.join(layers)}"))
    table.caption = "\n".join(notes) or None
    return table


def _fp32_layers(entry: Any) -> list[str]:
    from kdedge.export.route import fp32_layers

    try:
        return fp32_layers(entry)
    except (TypeError, AttributeError):  # a hand-edited manifest
        return []


def _export_cells(stage: str, fmt: str, entry: dict[str, Any], long: bool = False) -> list[str]:
    from kdedge.export.route import int8_route

    try:
        parity = entry.get("parity") or {}
        gate = "failed, kept by --allow-drop" if entry.get("parity_failures") else "passed"
        return [str(entry.get("file", "?")), f"{entry['bytes'] / 1024:.0f}", f"{parity['agreement']:.2%}",
                f"{0.0 - parity['accuracy_drop'] * 100:+.2f}", gate,
                int8_route(stage, {"format": fmt, **entry}, short=not long) or "—"]
    except (KeyError, TypeError, ValueError, AttributeError):
        return [str(entry.get("file", "?")), "?", "?", "?", "?", "?"]


def bench_summary(run: RunDir) -> Group | str:
    """The bench report's table and where its files are, or why there is none."""
    report_path = run.root / "bench" / "report.json"
    if not report_path.is_file():
        return "bench: no report yet (`kdedge bench RUN`)"
    from kdedge.bench.report import terminal_table  # the report's own table (no training code)

    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        where = escape(f"bench report of {report.get('created', '?')}: {report_path.with_suffix('.md')} (+ report.json)")
        return Group(terminal_table(report), where)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"bench: {escape(str(report_path))} is unreadable or incomplete; rerun `kdedge bench RUN`"
