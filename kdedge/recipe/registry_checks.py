"""Checks of a recipe against the registries: model, dataset and loss names and their options.

Models are also built on the meta device (no memory, no compute) so that bad option values surface
at load. The registries are imported inside the functions: importing kdedge.recipe (as run.py and
the bench command do) must not load torch, the models or the losses.
"""

from __future__ import annotations

from typing import Any

from kdedge.errors import KdedgeError
from kdedge.options import OptionError, check_options
from kdedge.recipe.messages import did_you_mean, dotted
from kdedge.recipe.schema import DataConfig, Recipe


def check_registered(recipe: Recipe, source: str) -> None:
    """The dataset, every model and every loss exist and take the options the recipe gives them."""
    from kdedge.data import DATASETS
    from kdedge.data.base import FIXED as DATASET_FIXED
    from kdedge.models import FIXED as MODEL_FIXED
    from kdedge.models import MODELS

    _check_options(DATASETS, recipe.data.dataset, recipe.data.options, DATASET_FIXED,
                   "data", "dataset", source, own_keys=list(DataConfig.model_fields))
    roles = [("teacher", recipe.teacher)] + ([("student", recipe.student)] if recipe.student else [])
    roles += [(f"assistants.{name}", cfg) for name, cfg in recipe.assistants.items()]
    for role, cfg in roles:
        if cfg.model is None:
            continue  # a teacher.from_run not trained yet (recipe check only)
        kwargs = _check_options(MODELS, cfg.model.name, cfg.model.kwargs, MODEL_FIXED,
                                f"{role}.model", "name", source, own_keys=["name"])
        _check_model_values(cfg.model.name, kwargs, f"{role}.model", source)
    if recipe.distill is not None:
        _check_losses(recipe, source)


def _check_losses(recipe: Recipe, source: str) -> None:
    from kdedge.features import validate_paths
    from kdedge.losses import LOSSES

    labeled = not recipe.distill.transfer.unlabeled or recipe.distill.transfer.pseudo_labels
    for i, spec in enumerate(recipe.distill.losses):
        path = f"distill.losses[{i}]"
        if spec.name not in LOSSES:
            raise KdedgeError(f"{source}: {path}.name: unknown loss {spec.name!r}; available: {', '.join(LOSSES.names())}")
        loss = LOSSES.get(spec.name)
        try:
            params = check_options(loss.params, spec.options)
        except OptionError as exc:
            field = f"{path}.{dotted(exc.loc)}"
            if exc.is_unknown_key:
                allowed = ["name", "weight", "warmup_epochs", *exc.allowed]
                raise KdedgeError(f"{source}: {field}: unknown key for loss {spec.name!r}"
                                  f"{did_you_mean(str(exc.loc[-1]), allowed)}; allowed: {', '.join(allowed)}") from None
            raise KdedgeError(f"{source}: {field}: {exc.message} (got {exc.value!r})") from None
        if loss.needs_labels and not labeled:
            raise KdedgeError(f"{source}: {path}.name: loss {spec.name!r} needs labels but distill.transfer is "
                              "unlabeled; set distill.transfer.pseudo_labels: true or use hinton")
        if loss.kind == "features":
            for side, role in (("student", recipe.student), ("teacher", recipe.teacher)):
                if role.model is None:
                    continue
                try:
                    validate_paths(_meta_model(role.model.name, role.model.kwargs), [params[side]])
                except KdedgeError as exc:
                    raise KdedgeError(f"{source}: {path}.{side}: {exc}") from None
        _check_mc_dropout(recipe, loss, spec.name, f"{source}: {path}.name")


def _check_mc_dropout(recipe: Recipe, loss, name: str, where: str) -> None:
    """MC losses (mc_kd*) sample dropout: the model they sample must have some (from_run teachers: at train time)."""
    from kdedge.uncertainty.mc_dropout import active_dropouts

    for side, role, needed in (("teacher", recipe.teacher, loss.teacher_mc), ("student", recipe.student, loss.student_mc)):
        if needed and role is not None and role.model is not None and not active_dropouts(
                _meta_model(role.model.name, role.model.kwargs)):
            raise KdedgeError(f"{where}: loss {name!r} samples the {side}'s dropout but {side}.model "
                              f"({role.model.name}) has none; set {side}.model.dropout (e.g. 0.2)"
                              + (" or use hinton" if side == "teacher" else " or use mc_kd"))


def _check_options(registry, name: str, options: dict, fixed: frozenset, path: str, name_key: str,
                   source: str, own_keys: list[str]) -> dict[str, Any]:
    """Validate a registered function's options (the spec's extra keys) against its signature."""
    if name not in registry:
        raise KdedgeError(f"{source}: {path}.{name_key}: unknown {registry.kind} {name!r}; "
                          f"available: {', '.join(registry.names())}")
    try:
        return check_options(registry.get(name), options, fixed)
    except OptionError as exc:
        field = f"{path}.{dotted(exc.loc)}"
        if exc.is_unknown_key:
            allowed = own_keys + [f"{k} ({registry.kind} option)" for k in exc.allowed]
            suggestion = did_you_mean(str(exc.loc[-1]), [*own_keys, *exc.allowed])
            raise KdedgeError(f"{source}: {field}: unknown key for {registry.kind} {name!r}{suggestion}; "
                              f"allowed: {', '.join(allowed)}") from None
        raise KdedgeError(f"{source}: {field}: {exc.message} (got {exc.value!r})") from None


def _meta_model(name: str, kwargs: dict[str, Any]):
    """The model built on the meta device: no memory, no compute, but every value checked."""
    import torch

    from kdedge.models import build_model

    with torch.device("meta"):
        return build_model(name, in_channels=3, num_classes=10, image_size=32, **kwargs)


def _check_model_values(name: str, kwargs: dict[str, Any], path: str, source: str) -> None:
    """Build the model on the meta device so value errors surface at load."""
    from kdedge.models.base import ModelConfigError

    try:
        _meta_model(name, kwargs)
    except ModelConfigError as exc:
        raise KdedgeError(f"{source}: {path}.{exc.field}: {exc}") from None
