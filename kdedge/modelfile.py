"""Finished model files: weights plus the spec that rebuilds the architecture, loaded weights_only."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.io import atomic_path
from kdedge.models import build_model

MODEL_FORMAT = "kdedge-model-1"


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


@dataclass(frozen=True)
class ModelSpecRecord:
    name: str
    kwargs: dict[str, Any]
    in_channels: int
    num_classes: int
    image_size: int

    def build(self) -> nn.Module:
        return build_model(self.name, in_channels=self.in_channels, num_classes=self.num_classes,
                           image_size=self.image_size, **self.kwargs)


def save_model(path: Path, model: nn.Module, spec: ModelSpecRecord) -> None:
    # Contiguous CPU copies: the file must not depend on the training device or memory format.
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "spec": asdict(spec), "state_dict": state}, tmp)


def load_model(path: Path, *, fix: str) -> tuple[nn.Module, ModelSpecRecord]:
    obj = load_torch_file(path, expected_format=MODEL_FORMAT, fix=fix)
    spec = ModelSpecRecord(**obj["spec"])
    model = spec.build()
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise KdedgeError(f"{path}: weights do not fit model {spec.name!r} "
                          f"({str(exc).splitlines()[0][:100]}); {fix}") from None
    model.eval()
    return model, spec
