"""Typed recipes: the one place where YAML strings become types.

Everything is validated at load, before any work starts; a bad recipe gives one line naming the
file, the field path and what is allowed. The package's modules, one job each:

schema.py           the typed sections (pydantic) and their cross-field rules
load.py             load_recipe / recipe_from_dict, sweep recipes and their points
yaml_loader.py      the YAML reader (duplicate keys refused, 1e-3 read as a number)
messages.py         one-line wording of validation errors
registry_checks.py  model, dataset and loss names and options against the registries
from_run.py         teacher.from_run: the teacher read from another run's manifest
sweep.py            dotted field paths (distill.losses[0].temperature) and --set values
hashing.py          the run-compatibility hash and the fields it leaves out
json_schema.py      the JSON schema for editors
"""

from kdedge.recipe.hashing import EXPERIMENT_SECTIONS, UNHASHED_TRAIN_FIELDS, without_unhashed
from kdedge.recipe.json_schema import recipe_json_schema
from kdedge.recipe.load import load_recipe, recipe_from_dict, sweep_point, with_sweep
from kdedge.recipe.schema import (
    DataConfig,
    DistillConfig,
    ExportConfig,
    LossSpec,
    ModelSpec,
    OptimizerConfig,
    QuantConfig,
    Recipe,
    ReducedTransfer,
    RoleConfig,
    ScheduleConfig,
    SweepConfig,
    TeacherConfig,
    TrainConfig,
    TransferConfig,
)
from kdedge.recipe.sweep import parse_sweep_values, set_field

__all__ = [
    "EXPERIMENT_SECTIONS",
    "UNHASHED_TRAIN_FIELDS",
    "DataConfig",
    "DistillConfig",
    "ExportConfig",
    "LossSpec",
    "ModelSpec",
    "OptimizerConfig",
    "QuantConfig",
    "Recipe",
    "ReducedTransfer",
    "RoleConfig",
    "ScheduleConfig",
    "SweepConfig",
    "TeacherConfig",
    "TrainConfig",
    "TransferConfig",
    "load_recipe",
    "parse_sweep_values",
    "recipe_from_dict",
    "recipe_json_schema",
    "set_field",
    "sweep_point",
    "with_sweep",
    "without_unhashed",
]
