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
    return schema
