"""Sweep paths: setting one dotted recipe field (distill.losses[0].temperature) in a recipe's dict,
and reading the values of `--set FIELD=VALUES`. Works on plain dicts; load.py turns them into recipes.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from kdedge.errors import KdedgeError
from kdedge.recipe.hashing import EXPERIMENT_SECTIONS
from kdedge.recipe.yaml_loader import read_scalar

_PATH_PART = re.compile(r"([A-Za-z0-9_]+)((?:\[\d+\])*)")


def set_field(raw: dict, path: str, value: Any) -> dict:
    """A copy of `raw` with the dotted field `path` (list items as name[i]) set to `value`."""
    out = copy.deepcopy(raw)
    node: Any = out
    parts = path.split(".")
    for n, part in enumerate(parts):
        match = _PATH_PART.fullmatch(part)
        if not match:
            raise KdedgeError(f"{path}: {part!r} is not a field name")
        key, indices = match.group(1), [int(i) for i in re.findall(r"\d+", match.group(2))]
        last = n == len(parts) - 1 and not indices
        if isinstance(node, dict) and node.get(key) is None and not last and not indices:
            node[key] = {}  # an optional section left out (e.g. distill.transfer.reduced): create it
        if not isinstance(node, dict) or (key not in node and not last):
            raise KdedgeError(f"{path}: no field {key!r} at that place in the recipe")
        if last:
            node[key] = value
            return out
        node = node[key]
        for j, i in enumerate(indices):
            if not isinstance(node, list) or i >= len(node):
                raise KdedgeError(f"{path}: {key} has no item [{i}]")
            if n == len(parts) - 1 and j == len(indices) - 1:
                node[i] = value
                return out
            node = node[i]
    return out


def parse_sweep_values(spec: str) -> list[Any]:
    """'1:20' (inclusive, step 1), '0.1:0.9:0.2', or a comma list '1,2,4,8' (items read as YAML scalars)."""
    parts = spec.split(":")
    if len(parts) in (2, 3) and "," not in spec:
        try:
            nums = [read_scalar(p) for p in parts]
        except yaml.YAMLError:
            nums = []
        if nums and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in nums):
            start, stop, step = nums[0], nums[1], nums[2] if len(nums) == 3 else 1
            if step <= 0 or stop < start:
                raise KdedgeError(f"--set: range {spec!r} needs start <= stop and a positive step")
            count = int(round((stop - start) / step)) + 1
            values = [start + i * step for i in range(count)]
            return [int(v) if all(isinstance(n, int) for n in nums) else round(v, 10) for v in values]
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise KdedgeError(f"--set: no values in {spec!r}; write e.g. 1:20 or 1,2,4,8")
    return [_read_value(item) for item in items]


def _read_value(item: str) -> Any:
    try:
        return read_scalar(item)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise KdedgeError(f"--set: value {item!r} is not valid YAML ({problem}); commas separate the values, "
                          "so a value cannot hold one (e.g. [32],[64] for two one-item lists; a list of several "
                          "items goes in the recipe's sweep: section), and strings with YAML symbols need quotes") from None


def with_sweep_dict(raw: dict, assignment: str, *, ensemble: bool, mc_dropout: int) -> dict:
    """`raw` (a recipe's dict) with its sweep: block replaced by FIELD=VALUES from the command line."""
    field, sep, spec = assignment.partition("=")
    if not sep:
        raise KdedgeError(f"--set {assignment!r}: write FIELD=VALUES, e.g. distill.losses[0].temperature=1:20")
    return {**raw, "sweep": {"set": field.strip(), "values": parse_sweep_values(spec), "ensemble": ensemble,
                             "mc_dropout": mc_dropout}}


def sweep_point_dict(raw: dict, value: Any) -> dict:
    """The dict of one sweep point of `raw`: the swept field set, the experiment sections dropped."""
    kept = {k: v for k, v in raw.items() if k not in EXPERIMENT_SECTIONS}
    return set_field(kept, raw["sweep"]["set"], value)
