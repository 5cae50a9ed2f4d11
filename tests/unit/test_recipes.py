"""Every shipped recipe loads and validates; the schema is a real JSON schema that accepts them."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from kdedge.errors import KdedgeError
from kdedge.recipe import load_recipe, recipe_from_dict, recipe_json_schema

from tests.conftest import REPO, TINY_RECIPE, deep_update

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_recipes_exist():
    assert {p.name for p in RECIPES} >= {"demo.yaml", "fmnist_teacher.yaml", "fmnist_kd.yaml", "cifar_resnet.yaml",
                                         "demo_sweep.yaml", "demo_chain.yaml", "demo_features.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_loads_and_matches_schema(path: Path):
    recipe = load_recipe(path, require_runs=False)  # a teacher.from_run may not be trained here
    assert recipe.name == path.stem
    jsonschema.validate(yaml.safe_load(path.read_text()), recipe_json_schema())


def test_schema_lists_registered_names():
    from kdedge.data import DATASETS
    from kdedge.models import MODELS

    schema = recipe_json_schema()
    assert schema["$defs"]["ModelSpec"]["properties"]["name"]["enum"] == MODELS.names()
    assert "fashion_mnist" in schema["$defs"]["DataConfig"]["properties"]["dataset"]["enum"]
    assert "resnet20" in MODELS.names() and "digits" in DATASETS.names()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(deep_update(TINY_RECIPE, {"teacher": {"model": {"name": "nope"}}}), schema)


def test_hash_ignores_formatting_but_not_content(tmp_path: Path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(TINY_RECIPE, sort_keys=True))
    b.write_text("# a comment\n" + yaml.safe_dump(TINY_RECIPE, sort_keys=False, default_flow_style=True))
    assert load_recipe(a).hash == load_recipe(b).hash
    changed = deep_update(TINY_RECIPE, {"teacher": {"train": {"epochs": 4}}})
    assert recipe_from_dict(changed).hash != load_recipe(a).hash
    moved = deep_update(TINY_RECIPE, {"output_dir": "elsewhere"})
    assert recipe_from_dict(moved).hash == load_recipe(a).hash


def test_defaults_and_types():
    recipe = recipe_from_dict(TINY_RECIPE)
    assert recipe.teacher.train.optimizer.momentum == 0.9
    assert recipe.teacher.model.kwargs == {"widths": [32], "dropout": 0.1}
    assert recipe.student is None


def _with_teacher_model(model: dict) -> dict:
    recipe = deep_update(TINY_RECIPE, {})
    recipe["teacher"]["model"] = model
    return recipe


def test_model_kwargs_are_checked_against_the_builder_signature():
    with pytest.raises(KdedgeError, match=r"teacher\.model\.widths"):
        recipe_from_dict(_with_teacher_model({"name": "mlp", "widths": "wide"}))
    with pytest.raises(KdedgeError, match=r"teacher\.model\.depth: .*6n\+2"):
        recipe_from_dict(_with_teacher_model({"name": "resnet", "depth": 21}))
    with pytest.raises(KdedgeError, match=r"teacher\.model\.depht: unknown key .*allowed: name, depth"):
        recipe_from_dict(_with_teacher_model({"name": "resnet", "depht": 20}))
    ok = recipe_from_dict(_with_teacher_model({"name": "resnet", "depth": 32, "width": 8}))
    assert ok.teacher.model.kwargs == {"depth": 32, "width": 8}


def test_relative_data_root_is_relative_to_the_recipe(tmp_path: Path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"data": {"root": "data"}})))
    assert load_recipe(path).data.root == (tmp_path / "data").resolve()
