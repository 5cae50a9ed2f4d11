"""The recipe's JSON schema for editors, with the registered model, dataset and loss names as enums."""

from __future__ import annotations

from typing import Any

from kdedge.recipe.schema import Recipe


def recipe_json_schema() -> dict[str, Any]:
    """JSON schema for editors, with the registered model, dataset and loss names as enums."""
    # imported here: the registries load torch, which importing kdedge.recipe must not
    from kdedge.data import DATASETS
    from kdedge.losses import LOSSES
    from kdedge.models import MODELS

    schema = Recipe.model_json_schema()
    defs = schema.get("$defs", {})
    defs["ModelSpec"]["properties"]["name"]["enum"] = MODELS.names()
    defs["DataConfig"]["properties"]["dataset"]["enum"] = DATASETS.names()
    defs["LossSpec"]["properties"]["name"]["enum"] = LOSSES.names()
    defs["DataConfig"]["properties"].update(_dataset_options(DATASETS))
    return schema


def _dataset_options(datasets) -> dict[str, Any]:
    """The loaders' own options (data.image_size, ...), each described with the datasets that take it."""
    import inspect
    import typing

    from pydantic import TypeAdapter

    from kdedge.data.base import FIXED

    out: dict[str, Any] = {}
    for name in datasets.names():
        loader = datasets.get(name)
        hints = typing.get_type_hints(loader, include_extras=True)  # the annotations are strings
        for param in inspect.signature(loader).parameters.values():
            if param.name in FIXED or param.name not in hints:
                continue
            entry = out.setdefault(param.name, {**TypeAdapter(hints[param.name]).json_schema(), "datasets": []})
            entry["datasets"].append(name)
            if param.default is not inspect.Parameter.empty:
                entry["default"] = param.default
    for entry in out.values():
        own = entry.get("description")
        entry["description"] = f"option of {', '.join(entry.pop('datasets'))}" + (f": {own}" if own else "")
    return out
