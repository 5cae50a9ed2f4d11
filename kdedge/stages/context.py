"""What the CLI hands to every stage: where to print, where to look for data, which device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from kdedge.choices import DEVICES
from kdedge.errors import KdedgeError


@dataclass(frozen=True)
class StageContext:
    console: Console | None = None
    data_roots: tuple[Path, ...] = ()  # extra dataset locations (e.g. $KDEDGE_DATA), read by the CLI
    device_override: str | None = None

    def device(self, recipe_device: str) -> torch.device:
        return resolve_device(self.device_override or recipe_device)

    def print(self, *args, **kwargs) -> None:
        if self.console is not None:
            self.console.print(*args, **kwargs)

    def notes(self, lines: tuple[str, ...], *, what: str = "data") -> None:
        """One yellow line each (a loader's notes: converted images, skipped files, the cache used)."""
        from rich.markup import escape

        for line in lines:
            self.print(f"[yellow]{what}[/]: {escape(line)}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KdedgeError("device: cuda was asked for but torch sees no CUDA GPU "
                          f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    if name not in DEVICES:  # "auto" was resolved above
        raise KdedgeError(f"device: unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    return torch.device(name)
