"""Recipes from YAML files and dicts: validated at load, before any work starts.

A bad recipe gives one line naming the file, the field path (e.g. ``teacher.model.depth``) and
what is allowed. Sweep recipes and their points are made here too, since each point is a recipe
that goes through the same checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdedge.errors import KdedgeError
from kdedge.recipe.from_run import teacher_from_run
from kdedge.recipe.messages import describe
from kdedge.recipe.registry_checks import check_registered
from kdedge.recipe.schema import Recipe
from kdedge.recipe.sweep import sweep_point_dict, with_sweep_dict
from kdedge.recipe.yaml_loader import read_yaml


def load_recipe(path: str | Path, *, require_runs: bool = True) -> Recipe:
    """Read and validate a recipe. With require_runs=False a teacher.from_run that is not trained yet
    is accepted (only `recipe check` and tests do that); everything else is still checked."""
    path = Path(path)
    if not path.is_file():
        raise KdedgeError(f"{path}: recipe file not found; give the path of a YAML recipe (see recipes/)")
    raw = read_yaml(path)
    return recipe_from_dict(raw, source=str(path), base_dir=path.parent, require_runs=require_runs)


def recipe_from_dict(raw: Any, *, source: str = "<recipe>", base_dir: Path | None = None,
                     require_runs: bool = True) -> Recipe:
    if not isinstance(raw, dict):
        raise KdedgeError(f"{source}: a recipe must be a YAML mapping (name:, data:, teacher:, ...), "
                          f"got {type(raw).__name__}")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise KdedgeError(f"{source}: {describe(exc)}") from None
    if recipe.teacher.from_run is not None:
        try:
            recipe = teacher_from_run(recipe, source)
        except KdedgeError:
            if require_runs or recipe.teacher.model is not None:
                raise
    check_registered(recipe, source)
    _check_sweep_points(recipe, source)
    if recipe.data.root is not None and base_dir is not None and not recipe.data.root.is_absolute():
        # A relative data root is relative to the recipe file, so a recipe works from any cwd.
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(
            update={"root": (base_dir / recipe.data.root).resolve()})})
    if recipe.data.root is not None and not recipe.data.root.is_dir():
        raise KdedgeError(f"{source}: data.root: directory {recipe.data.root} does not exist; "
                          f"create it and put the {recipe.data.dataset} files there, or remove data.root")
    return _resolve_teacher_file(recipe, source, base_dir)


def _resolve_teacher_file(recipe: Recipe, source: str, base_dir: Path | None) -> Recipe:
    """A user's own teacher file: relative to the recipe file, and there (checked when read from a file;
    a run's manifest holds the resolved path, and the run its own copy)."""
    field, path = recipe.teacher.source, recipe.teacher.source_path
    if path is None or base_dir is None:
        return recipe
    if not path.is_absolute():
        path = (base_dir / path).resolve()
        recipe = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={field: path})})
    if not path.is_file():
        raise KdedgeError(f"{source}: teacher.{field}: file {path} does not exist; give the path of your teacher's "
                          "file (relative to the recipe file)")
    return recipe


def with_sweep(recipe: Recipe, assignment: str, *, ensemble: bool, source: str, mc_dropout: int = 0) -> Recipe:
    """The recipe with its sweep: block replaced by FIELD=VALUES from the command line."""
    raw = with_sweep_dict(recipe.to_dict(), assignment, ensemble=ensemble, mc_dropout=mc_dropout)
    return recipe_from_dict(raw, source=source)


def sweep_point(recipe: Recipe, value: Any, *, require_runs: bool = True) -> Recipe:
    """The recipe of one sweep point: the swept field set, the experiment sections dropped."""
    return recipe_from_dict(sweep_point_dict(recipe.to_dict(), value), source="<sweep point>",
                            require_runs=require_runs)


def _check_sweep_points(recipe: Recipe, source: str) -> None:
    """Every sweep value makes a valid recipe (each point is checked like a recipe of its own)."""
    if recipe.sweep is None:
        return
    for value in recipe.sweep.values:
        try:
            # a teacher.from_run not trained yet (recipe check only) is not required of the points either
            sweep_point(recipe, value, require_runs=recipe.teacher.model is not None)
        except KdedgeError as exc:
            raise KdedgeError(f"{source}: sweep.values: {value!r} for {recipe.sweep.set}: "
                              f"{exc.message.removeprefix('<sweep point>: ')}") from None
