"""A run's summary as a rich table, read from the manifest alone."""

from __future__ import annotations

from rich.table import Table

from kdedge.run import RunDir


def run_summary_table(run: RunDir) -> Table:
    manifest = run.read_manifest()
    data = manifest.get("data", {})
    stages = manifest.get("stages", {})
    title = (f"{manifest['recipe']['name']} — {data.get('dataset', '?')} "
             f"({data.get('n_train', '?')} train / {data.get('n_val', '?')} val / {data.get('n_test', '?')} test)")
    table = Table(title=title)
    for col in ("model", "params", "epochs", "train time", "test acc", "test NLL", "test ECE", "T*", "ECE after T*"):
        table.add_column(col, justify="right" if col != "model" else "left")
    teacher = stages.get("teacher")
    if teacher and teacher.get("status") == "complete":
        cal = stages.get("calibration", {})
        t_star = cal.get("temperature")
        table.add_row(
            f"teacher: {teacher['model']}", f"{teacher['parameters']:,}", str(teacher["epochs"]),
            f"{teacher['train_time_s']:.0f} s", f"{teacher['test']['accuracy']:.4f}",
            f"{teacher['test']['nll']:.4f}", f"{teacher['test']['ece']:.4f}",
            f"{t_star:.3f}" if t_star else "—", f"{cal['test_ece_after']:.4f}" if t_star else "—")
    else:
        table.add_row("teacher", *["—"] * 8)
    return table
