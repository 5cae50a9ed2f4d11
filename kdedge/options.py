"""Options of registered functions (models, datasets, losses): checking them against what is accepted.

A builder's keyword parameters (or a loss's params model) are the one definition of its options;
`check_options` derives the allowed names and a strict pydantic schema from it, so recipes, loaders
and builders agree on what an option is. Callers word the error; this module only finds it.
"""

from __future__ import annotations

import inspect
import typing
from functools import lru_cache
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class OptionError(ValueError):
    """The first problem in a set of options. `loc` is its path (pydantic style), `kind` the pydantic
    error type ("extra_forbidden" for a key that is not an option), `unknown` every unknown key
    (sorted), `allowed` the accepted option names in declaration order."""

    def __init__(self, loc: tuple, kind: str, message: str, value: Any, *, allowed: list[str],
                 unknown: list[str]) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc, self.kind, self.message, self.value = loc, kind, message, value
        self.allowed, self.unknown = allowed, unknown

    @property
    def is_unknown_key(self) -> bool:
        return self.kind == "extra_forbidden"


def option_parameters(fn: Callable, fixed: frozenset[str]) -> dict[str, inspect.Parameter]:
    """The user-settable keyword parameters of `fn`: all but the `fixed` ones the pipeline fills in."""
    return {name: p for name, p in inspect.signature(fn).parameters.items()
            if name not in fixed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@lru_cache(maxsize=None)
def options_schema(fn: Callable, fixed: frozenset[str]) -> type[BaseModel]:
    """A strict pydantic model of `fn`'s options (annotations may carry Field constraints)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for name, param in option_parameters(fn, fixed).items():
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(f"{fn.__name__}_options", __config__=ConfigDict(extra="forbid", strict=True), **fields)


def check_options(target: Callable | type[BaseModel], options: dict[str, Any],
                  fixed: frozenset[str] = frozenset(), *, values: bool = True) -> dict[str, Any]:
    """`options` checked against `target`: a function's keyword parameters (less `fixed`) or a pydantic
    params model. Returns them with defaults filled in; raises OptionError on the first problem.

    values=False checks the names only, for builders that check their values themselves with
    messages of their own (a model's ModelConfigError).
    """
    is_schema = isinstance(target, type) and issubclass(target, BaseModel)
    allowed = list(target.model_fields if is_schema else option_parameters(target, fixed))
    unknown = sorted(set(options) - set(allowed))
    if not values:
        if unknown:
            raise OptionError((unknown[0],), "extra_forbidden", "Extra inputs are not permitted",
                              options[unknown[0]], allowed=allowed, unknown=unknown)
        return dict(options)
    schema = target if is_schema else options_schema(target, fixed)
    try:
        return schema.model_validate(options).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        raise OptionError(tuple(err["loc"]), err["type"], err["msg"], err.get("input"),
                          allowed=allowed, unknown=unknown) from None
