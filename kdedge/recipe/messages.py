"""One-line wording of recipe validation errors: the field path, the problem, what is allowed."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from kdedge.recipe.schema import Recipe


def describe(exc: ValidationError) -> str:
    """One line for the most telling error: field path, problem, allowed values.

    An unknown key comes first: a misspelt `epoch:` also makes `epochs` missing, and the typo is
    what the user must fix, so it is named with the closest valid key."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), None) or _misspelt_missing(errors) or errors[0]
    loc = [str(p) for p in err["loc"]]
    field = dotted(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(Recipe, err["loc"][:-1])
        msg = f"{field}: unknown key{did_you_mean(str(err['loc'][-1]), allowed)}; allowed keys here: {', '.join(allowed)}"
    elif err["type"] == "misspelt":
        msg = f"{field}: unknown key (did you mean {err['missing']!r}?); {err['missing']!r} is required here"
    elif err["type"] == "missing":
        msg = f"{field}: required field is missing"
    elif err["type"] == "value_error":  # a cross-field rule: its message says it all
        msg = f"{field}: {err['msg'].removeprefix('Value error, ')}"
    else:
        msg = f"{field}: {err['msg']} (got {err.get('input')!r})" if loc else err["msg"]
    more = len(errors) - 1
    return msg + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _misspelt_missing(errors: list[dict]) -> dict | None:
    """A missing required key beside an unknown one that is close to it (in sections that take extra
    keys as options, e.g. a model's `nme:` for `name:`): reported as that unknown key."""
    for err in errors:
        given = err.get("input")
        if err["type"] != "missing" or not isinstance(given, dict):
            continue
        wanted = str(err["loc"][-1])
        close = difflib.get_close_matches(wanted, [str(k) for k in given if k != wanted], n=1)
        if close:
            return {"type": "misspelt", "loc": (*err["loc"][:-1], close[0]), "missing": wanted}
    return None


def dotted(loc: tuple) -> str:
    """A pydantic error location as the recipe's field path, e.g. distill.losses[0].temperature."""
    out = ""
    for part in loc:
        if isinstance(part, str) and any(c in part for c in "-[( "):
            continue  # pydantic's union-member tags (e.g. 'constrained-float'), not recipe fields
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "recipe"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        current = _unwrap_optional(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
