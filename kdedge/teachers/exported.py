"""A teacher given as a torch.export program (torch.export.save, .pt2): a model of the user's own class,
without its code. torch.export.load unpickles custom objects and may fall back to weights_only=False, so
an archive holding such objects is refused and every tensor load is forced to weights_only."""

from __future__ import annotations

import io
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from kdedge.errors import KdedgeError

FIX = "save it with torch.export.save(torch.export.export(model.eval(), (example,)), 'teacher.pt2')"


class ExportedTeacher(nn.Module):
    """The program's module behind an ordinary nn.Module: an exported module refuses .train()/.eval(),
    which every stage calls; its graph was traced in eval mode already."""

    foreign_kind = "a torch.export program"  # formats that need PyTorch layers skip it

    def __init__(self, program: nn.Module, input_shape: tuple[int | None, ...]) -> None:
        super().__init__()
        self.program = program
        self.input_shape = input_shape  # [N, C, H, W]; None where the program took a dynamic size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fixed = self.input_shape[0]
        if fixed is None or fixed == len(x):
            return self._logits(x)
        # exported with a fixed batch size: chunks of that size, the last one zero-padded
        parts = []
        for chunk in x.split(fixed):
            pad = x.new_zeros((fixed - len(chunk), *chunk.shape[1:]))
            parts.append(self._logits(torch.cat([chunk, pad]))[:len(chunk)])
        return torch.cat(parts)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.program(x)
        return out[0] if isinstance(out, (tuple, list)) else out  # the first output is the logits

    def train(self, mode: bool = True) -> "ExportedTeacher":
        self.training = mode  # the children keep their traced mode
        return self


def load_exported(path: Path, content: bytes) -> ExportedTeacher:
    _refuse_pickled_objects(path, content)
    try:
        with _weights_only_loads(), _quiet_torch_export_logs():
            program = torch.export.load(io.BytesIO(content))
    except KdedgeError:
        raise
    except Exception as exc:  # torch raises many types for a foreign or damaged archive
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if "deserializing" in reason:  # torch's words for "no exported program in this archive"
            reason = "no exported program in it: a torch.save file? a state_dict goes in teacher.checkpoint"
        raise KdedgeError(f"{path}: teacher.exported is not a torch.export program this torch "
                          f"({torch.__version__}) can read ({reason}); {FIX}") from None
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    if len(inputs) != 1:
        raise KdedgeError(f"{path}: teacher.exported takes {len(inputs)} inputs; kdedge feeds one image batch "
                          f"[N, C, H, W]; {FIX}")
    value = inputs[0].meta.get("val")
    shape = tuple(int(d) if isinstance(d, int) else None for d in value.shape) if value is not None else ()
    if len(shape) != 4:
        raise KdedgeError(f"{path}: teacher.exported takes an input of shape {list(shape)}; kdedge feeds "
                          f"[N, C, H, W] image batches; {FIX}")
    return ExportedTeacher(program.module(), shape)


def _refuse_pickled_objects(path: Path, content: bytes) -> None:
    """Custom and opaque objects are read with pickle by torch.export.load: refused unread."""
    from torch.export.pt2_archive.constants import CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX

    try:
        names = zipfile.ZipFile(io.BytesIO(content)).namelist()
    except zipfile.BadZipFile:
        raise KdedgeError(f"{path}: teacher.exported is not a .pt2 archive (not a zip file); {FIX}") from None
    pickled = [n for n in names if os.path.basename(n).startswith((CUSTOM_OBJ_FILENAME_PREFIX,
                                                                    OPAQUE_OBJ_FILENAME_PREFIX))]
    if pickled:
        raise KdedgeError(f"{path}: teacher.exported holds pickled Python objects ({pickled[0]}), which kdedge "
                          "does not unpickle; export a model without script/opaque objects, or give the teacher "
                          "as onnx:")


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    """torch honours this variable in every torch.load, including the ones inside torch.export.load."""
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


@contextmanager
def _quiet_torch_export_logs() -> Iterator[None]:
    """torch.export.load logs a traceback before it raises on a foreign file; kdedge says it in one line."""
    import logging

    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export", "torch.export._trace")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
