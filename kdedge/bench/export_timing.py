"""Time a run's recorded ONNX exports against each other on ONNX Runtime CPU.

Used by the bench scripts that compare formats (INT8 vs fp32) or models (teacher vs student): every
session gets the same real test images and thread count, and rounds alternate between them so drift
of a shared machine hits all alike. Accuracy is the one `kdedge export` measured on the whole test
split with ONNX Runtime (its parity record), so timing and accuracy describe the same file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdedge.bench.runtimes import verified_export
from kdedge.errors import KdedgeError
from kdedge.export.ort_session import normalise, open_session
from kdedge.latency import time_interleaved
from kdedge.run import RunDir
from kdedge.stages.data import prepare_data


def export_records(run: RunDir, picks: dict[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """{key: the manifest record of (model, format)}, each checked against its file's checksum."""
    exports = run.read_manifest().get("exports", {})
    records = {}
    for key, (model, fmt) in picks.items():
        if fmt not in exports.get(model, {}):
            raise KdedgeError(f"{run.root}: no {fmt} export of {model}; run `kdedge export {run.root} --int8 "
                              f"--models {model}`")
        verified_export(run.root, exports, model, fmt)
        records[key] = exports[model][fmt]
    return records


def time_exports(run: RunDir, picks: dict[str, tuple[str, str]], *, threads: int, batches: tuple[int, ...] = (64, 1),
                 rounds: int = 10, runs: int = 50) -> dict[str, dict[str, Any]]:
    """Per key: model, format, file, bytes, accuracy, agreement with fp32 and `batch<N>` timings."""
    records = export_records(run, picks)
    data = prepare_data(run.recipe())
    test_images = data.training.test.images
    if len(test_images) < max(batches):
        raise KdedgeError(f"{run.root}: the test split has {len(test_images)} images, fewer than batch {max(batches)}")
    images = normalise(test_images[:max(batches)].numpy(), data.training.stats)
    sessions = {key: open_session(run.root / rec["file"], threads=threads) for key, rec in records.items()}
    result = {key: {"model": picks[key][0], "format": rec["format"], "file": rec["file"], "bytes": rec["bytes"],
                    "accuracy": rec["parity"]["accuracy"], "agreement_with_fp32": rec["parity"]["agreement"]}
              for key, rec in records.items()}
    for batch in batches:
        x = np.ascontiguousarray(images[:batch])
        calls = {key: (lambda s=s, x=x: s.run(None, {s.get_inputs()[0].name: x})) for key, s in sessions.items()}
        for key, timing in time_interleaved(calls, batch=batch, rounds=rounds, runs=runs).items():
            result[key][f"batch{batch}"] = timing.to_dict()
    return result
