"""Training checkpoints: written atomically, loaded with weights_only=True, checked for origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdedge.errors import KdedgeError
from kdedge.io import save_torch
from kdedge.modelfile import load_torch_file

CHECKPOINT_FORMAT = "kdedge-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    save_torch(path, {"format": CHECKPOINT_FORMAT, **state})


def load_checkpoint(path: Path, *, fingerprint: str) -> dict[str, Any]:
    fix = f"delete {path} or rerun with --force"
    state = load_torch_file(path, expected_format=CHECKPOINT_FORMAT, fix=fix)
    if state.get("fingerprint") != fingerprint:
        raise KdedgeError(f"{path}: checkpoint belongs to another training configuration; {fix}")
    return state
