"""The recipe hash that says whether a run directory's finished models still match a recipe.

Only what the teacher, student and baseline depend on is hashed: formatting, comments, key order,
where the run is written, the experiment sections and training fields that leave the weights
unchanged do not change it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Training fields that leave the trained weights unchanged (compile and deterministic change only the
# rounding, as the device and thread count do, which are not hashed either).
UNHASHED_TRAIN_FIELDS = ("eval_every", "compile", "deterministic")

# Sections that only add experiments in their own sub-directories; they do not change what the
# teacher, student and baseline are, so they are left out of the run-compatibility hash. (quant:
# is fingerprinted by its own stage instead, so adding it keeps a finished teacher and student;
# export: holds settings of `kdedge export`, recorded beside each artifact.)
EXPERIMENT_SECTIONS = ("sweep", "assistants", "chain", "symmetry", "quant", "export")


def without_unhashed(obj: Any) -> Any:
    """`obj` without the training fields that leave the trained weights unchanged (UNHASHED_TRAIN_FIELDS),
    at any depth, so setting them neither invalidates a finished run nor blocks resuming one."""
    if isinstance(obj, dict):
        return {k: without_unhashed(v) for k, v in obj.items() if k not in UNHASHED_TRAIN_FIELDS}
    if isinstance(obj, list):
        return [without_unhashed(v) for v in obj]
    return obj


def recipe_hash(raw: dict[str, Any]) -> str:
    """16 hex digits of the canonical JSON of a recipe's dict (`Recipe.to_dict()`), less what is not hashed."""
    content = {k: v for k, v in raw.items() if k not in ("output_dir", *EXPERIMENT_SECTIONS)}
    canonical = json.dumps(without_unhashed(content), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
