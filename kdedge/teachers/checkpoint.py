"""A teacher's weights from a state_dict file: loaded weights_only, found inside the usual checkpoint
dicts, the wrappers' key prefixes removed, and any mismatch named in one line."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from kdedge.errors import KdedgeError

# where training scripts keep the weights inside a checkpoint dict (Lightning, timm, torchvision, DeiT, ...)
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "module", "model_ema")
# prefixes wrappers add: DataParallel/DDP (module.), torch.compile (_orig_mod.), Lightning/timm (model.)
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
SHOWN = 3  # names per kind of mismatch in the one-line error


def read_state_dict(path: Path, content: bytes) -> dict[str, torch.Tensor]:
    """The state_dict in `content` (the bytes of `path`), read with weights_only=True."""
    fix = "save the teacher with torch.save(model.state_dict(), path)"
    try:
        obj = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise KdedgeError(f"{path}: teacher.checkpoint holds pickled Python objects (a whole model saved with "
                          f"torch.save(model)?), which kdedge does not unpickle; {fix}, or give the teacher as "
                          "exported: (torch.export.save) or onnx:") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise KdedgeError(f"{path}: teacher.checkpoint is not a readable torch file ({reason}); {fix}") from None
    state = _find_state_dict(obj)
    if state is None:
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
        raise KdedgeError(f"{path}: teacher.checkpoint holds no state_dict (found: {keys}); {fix}, or keep it "
                          f"under one of the keys {', '.join(NESTED_KEYS)}")
    return state


def _find_state_dict(obj: object, depth: int = 0) -> dict[str, torch.Tensor] | None:
    if not isinstance(obj, dict) or depth > 2:
        return None
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    for key in NESTED_KEYS:
        found = _find_state_dict(obj.get(key), depth + 1)
        if found is not None:
            return found
    return None


def strip_wrapper_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Remove prefixes that every key carries and the model's own keys do not (repeatedly: a compiled
    DataParallel model has module._orig_mod.)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path, model_name: str) -> nn.Module:
    """`model` with `state` loaded (strict); a mismatch is one line naming the first keys and shapes."""
    own = model.state_dict()
    state = strip_wrapper_prefixes(state, set(own))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{label} {', '.join(items[:SHOWN])}{' …' if len(items) > SHOWN else ''} ({len(items)})"
                 for label, items in (("missing", missing), ("unexpected", unexpected),
                                      ("shape file vs model", shapes)) if items]
        raise KdedgeError(f"{path}: teacher.checkpoint does not fit model {model_name!r}: {'; '.join(parts)}; "
                          "check teacher.model (name and options, and the data's channels/size/classes) "
                          "against the architecture the weights were trained with")
    model.load_state_dict(state)
    return model.eval()
