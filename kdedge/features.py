"""Reach intermediate features of an unmodified model by module path (torchdistill-style hooks).

    with FeatureTap(student, ["stages.1"]) as tap:
        logits = student(x)
        feat = tap.features["stages.1"]      # keeps its autograd graph

Paths are ``model.get_submodule`` paths; ``model.feature_paths()`` lists the recommended ones (the
outputs of whole stages). Any real submodule is accepted, but a deeper one may be followed by an
in-place op (e.g. ``ReLU(inplace=True)`` after a BatchNorm) that overwrites the captured tensor:
reading such a feature raises instead of silently giving the post-activation values (checked with
the tensor's version counter; tensors made under ``torch.inference_mode`` have none, so the teacher
side is not checked there). A module called more than once per forward keeps its last output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from kdedge.errors import KdedgeError


def _suggested_paths(model: nn.Module) -> list[str]:
    paths = getattr(model, "feature_paths", None)
    if callable(paths):
        return list(paths())
    return [name for name, _ in model.named_modules() if name]


def validate_paths(model: nn.Module, paths: Iterable[str]) -> None:
    """Raise KdedgeError unless every path names a submodule (the model itself is not one).

    Needs no weights: works on a model built under ``torch.device("meta")``.
    """
    modules = {name for name, _ in model.named_modules() if name}
    bad = [p for p in paths if p not in modules]
    if bad:
        raise KdedgeError(
            f"unknown feature path(s) {', '.join(map(repr, bad))} for {type(model).__name__}; "
            f"valid paths: {', '.join(_suggested_paths(model))}"
        )


def _version(value: Any) -> int | None:
    if not isinstance(value, torch.Tensor) or value.is_inference():
        return None  # inference tensors track no version
    return value._version


class Features(Mapping[str, Any]):
    """Read-only view of the latest captured outputs, checked for in-place overwrites on read."""

    def __init__(self) -> None:
        self._outputs: dict[str, tuple[Any, int | None]] = {}

    def _store(self, path: str, output: Any) -> None:
        self._outputs[path] = (output, _version(output))

    def __getitem__(self, path: str) -> Any:
        output, version = self._outputs[path]  # KeyError: not tapped, or no forward has run yet
        if version is not None and output._version != version:
            raise KdedgeError(
                f"feature {path!r} was modified in place after its module returned (an inplace op "
                "follows it); tap a path from model.feature_paths() instead"
            )
        return output

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def clear(self) -> None:
        self._outputs.clear()


class FeatureTap:
    """Forward hooks on the named submodules; ``features[path]`` is the latest output of each.

    Hooks are registered at construction and removed by :meth:`remove` or on leaving the ``with``
    block; the model itself is never changed. Outputs are stored as returned (no detach, no copy),
    so a student feature carries its graph and a teacher run under ``no_grad`` costs nothing extra.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str]) -> None:
        self.paths = list(dict.fromkeys(paths))  # de-duplicated, order kept
        validate_paths(model, self.paths)
        self.features = Features()
        self._handles: list[RemovableHandle] = [
            model.get_submodule(path).register_forward_hook(self._hook(path)) for path in self.paths
        ]

    def _hook(self, path: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.features._store(path, output)

        return hook

    def remove(self) -> None:
        """Remove the hooks; the last outputs stay readable (e.g. a teacher's, after its ``with``)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
