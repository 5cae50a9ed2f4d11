"""A run's summary as a rich table, read from the manifest alone.

Metrics are rows and models are columns, so the table stays narrow (80 columns) as models are added.
"""

from __future__ import annotations

from typing import Any, Callable

from rich.table import Table

from kdedge.layout import BASELINE, QAT_STUDENT, STUDENT, TEACHER
from kdedge.run import RunDir

Row = tuple[str, Callable[[dict[str, Any], dict[str, Any]], str]]

_ROWS: list[Row] = [
    ("model", lambda s, c: s["model"]),
    ("trained on", lambda s, c: "hard labels" if s.get("kd") is None else "KD: " + kd_label(s["kd"])),
    ("training images", lambda s, c: f"{s['train_images']:,}" if "train_images" in s else "—"),
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
        table.add_row(label, *(cell(stage, cal or {}) for _, stage, cal in columns))
    return table
