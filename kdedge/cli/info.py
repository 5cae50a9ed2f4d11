"""Commands that only read: `kdedge show`, `kdedge list`, `kdedge recipe check|schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kdedge.cli.app import app, recipe_app, user_errors
from kdedge.errors import KdedgeError


@app.command()
@user_errors
def show(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory.")]) -> None:
    """Print a run's summary: data, stages, accuracy, calibration, exports and the bench report."""
    from kdedge.run import RunDir
    from kdedge.summary import bench_summary, exports_table, run_summary_table

    run, console = RunDir(run_dir), Console()
    for part in (run_summary_table(run), exports_table(run), bench_summary(run)):
        console.print(part)


@app.command("list")
@user_errors
def list_registered(
    what: Annotated[str, typer.Argument(metavar="WHAT", help="models | datasets | losses | formats | runtimes")],
) -> None:
    """List the registered models, datasets or losses, the export formats or the bench runtimes."""
    from kdedge.markdown import markdown_table

    if what == "formats":
        from kdedge.export.formats import formats_table

        print(markdown_table(["format", "file", "runtime", "what for", "install"], formats_table()))
        return
    if what == "runtimes":
        from kdedge.bench.runtimes import RUNTIMES

        rows = [[r.name, r.export_format or "the torch model", ", ".join(r.devices), r.module,
                 "yes" if r.default else "only with --runtime"] for r in RUNTIMES.values()]
        print(markdown_table(["runtime", "runs", "devices", "needs", "in the default set"], rows))
        return
    from kdedge.data import DATASETS
    from kdedge.losses import LOSSES
    from kdedge.models import MODELS

    registries = {"models": MODELS, "datasets": DATASETS, "losses": LOSSES}
    if what not in registries:
        raise KdedgeError(f"list: unknown kind {what!r}; allowed: {', '.join(registries)}, formats, runtimes")
    for name in registries[what].names():
        print(name)


@recipe_app.command("check")
@user_errors
def recipe_check(recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="YAML recipe.")]) -> None:
    """Validate a recipe without running anything."""
    from kdedge.recipe import load_recipe

    recipe = load_recipe(recipe_file, require_runs=False)
    print(f"{recipe_file}: ok (run {recipe.output_dir / recipe.name}, hash {recipe.hash})")
    if recipe.teacher.source is not None:
        print(f"note: teacher.{recipe.teacher.source} {recipe.teacher.source_path} is read, checked against the "
              "data and evaluated when `kdedge distill` starts")
    elif recipe.teacher.model is None:
        print(f"note: teacher.from_run {recipe.teacher.from_run} has no finished teacher yet; "
              "train it before `kdedge distill`")


@recipe_app.command("schema")
@user_errors
def recipe_schema() -> None:
    """Print the recipe JSON schema (for editor completion and validation)."""
    from kdedge.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))
