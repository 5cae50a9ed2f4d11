"""Finished model files: weights plus the spec that rebuilds the architecture, loaded weights_only."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.io import save_torch
from kdedge.models import build_model

MODEL_FORMAT = "kdedge-model-1"


def load_torch_file(path: Path, *, expected_format: str, fix: str, sha256: str | None = None) -> dict[str, Any]:
    """torch.load with weights_only=True; a truncated or foreign file is a one-line error. With `sha256`
    (recorded when the file was written) the bytes loaded are the bytes checked: torch does not verify
    its zip's CRCs, so zeroed weights would otherwise load silently."""
    try:
        if sha256 is not None:
            data = Path(path).read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256:
                raise KdedgeError(f"{path}: changed since it was written (a corrupt or truncated file, or other "
                                  f"weights: SHA-256 {actual[:16]}…, the manifest records {str(sha256)[:16]}…); {fix}")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        else:
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
    save_torch(path, {"format": MODEL_FORMAT, "spec": asdict(spec), "state_dict": state})


def load_model(path: Path, *, fix: str, sha256: str | None = None) -> tuple[nn.Module, ModelSpecRecord]:
    """The model in `path` (eval mode); `sha256`: the checksum it must have (None: not recorded)."""
    obj = load_torch_file(path, expected_format=MODEL_FORMAT, fix=fix, sha256=sha256)
    spec = ModelSpecRecord(**obj["spec"])
    model = spec.build()
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise KdedgeError(f"{path}: weights do not fit model {spec.name!r} "
                          f"({str(exc).splitlines()[0][:100]}); {fix}") from None
    model.eval()
    return model, spec
