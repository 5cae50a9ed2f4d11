"""Options of registered functions (models, datasets, ...): their typed keyword parameters.

One place derives both the set of allowed names and a strict pydantic schema from a builder's
signature, so recipes, loaders and builders agree on what an option is.
"""

from __future__ import annotations

import inspect
import typing
from functools import lru_cache
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, create_model


def option_parameters(fn: Callable, fixed: frozenset[str]) -> dict[str, inspect.Parameter]:
    """The user-settable keyword parameters of `fn`: all but the `fixed` ones the pipeline fills in."""
    return {name: p for name, p in inspect.signature(fn).parameters.items()
            if name not in fixed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def unknown_options(fn: Callable, options: dict[str, Any], fixed: frozenset[str]) -> list[str]:
    return sorted(set(options) - set(option_parameters(fn, fixed)))


@lru_cache(maxsize=None)
def options_schema(fn: Callable, fixed: frozenset[str]) -> type[BaseModel]:
    """A strict pydantic model of `fn`'s options (annotations may carry Field constraints)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for name, param in option_parameters(fn, fixed).items():
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(f"{fn.__name__}_options", __config__=ConfigDict(extra="forbid", strict=True), **fields)
