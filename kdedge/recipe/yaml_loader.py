"""Reading recipe YAML: a safe loader that refuses duplicate keys and reads 1e-3 as a number."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kdedge.errors import KdedgeError


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line = key, line


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (last-one-wins hides typos) and reads 1e-3 as a float
    (YAML 1.1 needs a dot, so `lr: 1e-3` would otherwise be the string "1e-3")."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: Path) -> Any:
    """The parsed YAML of the recipe file at `path`; syntax problems are one line naming file and line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=RecipeLoader)  # a SafeLoader
    except DuplicateKey as exc:
        raise KdedgeError(f"{path}: line {exc.line}: key {exc.key!r} appears twice; keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise KdedgeError(f"{path}:{where}: not valid YAML ({problem}); fix the syntax") from None
    except UnicodeDecodeError:
        raise KdedgeError(f"{path}: not a UTF-8 text file; give a YAML recipe") from None


def read_scalar(text: str) -> Any:
    """One YAML scalar as the recipe loader reads it (1e-3 is a float)."""
    return yaml.load(text, Loader=RecipeLoader)
