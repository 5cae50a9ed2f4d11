"""How to feed an exported ONNX model, written into the file itself (ONNX metadata_props), so a file
copied alone to a device still says its input name, shape, layout, normalisation and class names.

Written into the temp file before it is checked and checksummed: the parity gates measure the file as
it is kept, and the manifest's SHA-256 is the file with its metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx

from kdedge.export.onnx_fp32 import INPUT_NAME

PREFIX = "kdedge."


def input_record(data) -> dict[str, Any]:
    """What the model expects (a PreparedData's shape, normalisation, classes): the manifest's `input`."""
    c, h, w = data.input_shape
    return {"name": INPUT_NAME, "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW",
            "normalisation": {"scale": 1 / 255, "mean": list(data.training.stats.mean),
                              "std": list(data.training.stats.std),
                              "formula": "(pixel / 255 - mean) / std, per channel"},
            "classes": list(data.dataset.classes)}


def preprocessing_props(input_record: dict[str, Any], *, stage: str, fmt: str) -> dict[str, str]:
    """The metadata_props kdedge writes (strings; lists as JSON), from the manifest's `input` record."""
    from kdedge import __version__

    norm = input_record["normalisation"]
    values = {
        "input_name": input_record["name"], "input_shape": input_record["shape"], "input_dtype": input_record["dtype"],
        "layout": input_record["layout"], "pixel_scale": norm["scale"], "mean": norm["mean"], "std": norm["std"],
        "normalisation": norm["formula"], "classes": input_record["classes"],
        "kdedge_version": __version__, "model_stage": stage, "export_format": fmt}
    return {PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def write_props(path: Path, props: dict[str, str]) -> None:
    """Set `props` in the ONNX file at `path` (in place), replacing kdedge's earlier ones and keeping the rest
    (a user's own ONNX teacher may carry its own)."""
    model = onnx.load(os.fspath(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, os.fspath(path))


def read_props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(os.fspath(path), load_external_data=False).metadata_props}
