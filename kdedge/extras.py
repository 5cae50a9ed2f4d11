"""The optional extras kdedge uses when they are there (nvidia-modelopt, TensorRT): whether each is
installed on this machine, and the one line that says how to get it. Light on purpose: it looks the
packages up without importing them, so checking costs nothing and works without them."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

MODELOPT_MISSING = "nvidia-modelopt is not installed; pip install 'kdedge[modelopt]'"
TENSORRT_MISSING = ("TensorRT is not installed: on a workstation `pip install --extra-index-url https://pypi.nvidia.com "
                    "tensorrt` (needs an NVIDIA GPU), on a Jetson it comes with JetPack; engines must be built on the "
                    "device that runs them")


@dataclass(frozen=True)
class Requirement:
    """Something a feature needs on this machine (the export formats' `needs`)."""

    extra: str | None                  # the kdedge extra that provides it (None: not a package, e.g. a GPU)
    missing: Callable[[], str | None]  # None when it is met here, else why not and how to fix it


def _installed(module: str) -> bool:
    # looked up through the module (not imported by name) so a test can hide a package
    return importlib.util.find_spec(module) is not None


def modelopt_missing() -> str | None:
    return None if _installed("modelopt") else MODELOPT_MISSING


def tensorrt_missing() -> str | None:
    return None if _installed("tensorrt") else TENSORRT_MISSING


MODELOPT = Requirement("modelopt", modelopt_missing)
TENSORRT = Requirement("trt", tensorrt_missing)
