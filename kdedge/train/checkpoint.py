"""Training checkpoints: written atomically, loaded with weights_only=True, checked for origin."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from kdedge.errors import KdedgeError
from kdedge.io import atomic_path

CHECKPOINT_FORMAT = "kdedge-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_torch_file(path: Path, *, expected_format: str, fix: str) -> dict[str, Any]:
    """torch.load with weights_only=True; a truncated or foreign file is a one-line error."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KdedgeError(f"{path}: file not found; {fix}") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise KdedgeError(f"{path}: corrupt or truncated file ({reason}); {fix}") from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        raise KdedgeError(f"{path}: not a {expected_format} file; {fix}")
    return obj


def load_checkpoint(path: Path, *, fingerprint: str) -> dict[str, Any]:
    fix = f"delete {path} or rerun with --force"
    state = load_torch_file(path, expected_format=CHECKPOINT_FORMAT, fix=fix)
    if state.get("fingerprint") != fingerprint:
        raise KdedgeError(f"{path}: checkpoint belongs to another training configuration; {fix}")
    return state
