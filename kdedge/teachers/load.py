"""One function that turns a foreign teacher's file into an nn.Module returning logits, for the import
stage and for every later load from the run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdedge.modelfile import ModelSpecRecord
from kdedge.teachers.checkpoint import load_weights, read_state_dict
from kdedge.teachers.exported import load_exported
from kdedge.teachers.onnx_model import OnnxTeacher


def load_foreign(kind: str, path: Path, content: bytes, *, spec: ModelSpecRecord | None = None,
                 device: torch.device | None = None) -> nn.Module:
    """`kind` is the recipe field (checkpoint, exported, onnx); `content` the bytes of `path` as hashed.
    A checkpoint needs the spec of the registered architecture it is loaded into."""
    if kind == "checkpoint":
        assert spec is not None
        return load_weights(spec.build(), read_state_dict(path, content), path, spec.name)
    if kind == "exported":
        return load_exported(path, content)
    if kind == "onnx":
        cuda = device is not None and device.type == "cuda"
        providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if cuda else ("CPUExecutionProvider",)
        return OnnxTeacher(path, content, providers)
    raise ValueError(f"unknown teacher source {kind!r}")
