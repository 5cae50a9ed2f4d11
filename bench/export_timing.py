"""Time a run's recorded ONNX exports against each other on ONNX Runtime CPU.

A helper of the scripts in this folder that compare formats (int8_speedup.py: INT8 vs fp32) or
models (ratio.py: teacher vs student); they import it as `export_timing` (a script's own folder is
on its path). Every session gets the same real test images and thread count, and rounds alternate
between them so drift of a shared machine hits all alike. Accuracy is the one `kdedge export`
measured on the whole test split with ONNX Runtime (its parity record), so timing and accuracy
describe the same file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.bench.runtimes import verified_export
from kdedge.bench.timing import time_interleaved
from kdedge.errors import KdedgeError
from kdedge.export.ort_session import open_session
from kdedge.inputs import normalise
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


CALL_FLOOR = "ORT call floor"


def write_call_floor_model(path: Path, input_shape: tuple[int, ...], num_classes: int) -> Path:
    """An ONNX graph that only flattens its input and slices `num_classes` values out: timing it
    measures what one ONNX Runtime call costs with (almost) no arithmetic, the lower bound on any
    model's latency and so the upper bound on a teacher/student ratio."""
    from onnx import TensorProto, checker, helper, save

    def const(name: str, value: int):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [1], [value]))

    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1), const("start", 0),
             const("end", num_classes), const("axis", 1),
             helper.make_node("Slice", ["flat", "start", "end", "axis"], ["logits"])]
    graph = helper.make_graph(nodes, "call_floor",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    checker.check_model(model)
    save(model, str(path))
    return path


def time_exports(run: RunDir, picks: dict[str, tuple[str, str]], *, threads: int, batches: tuple[int, ...] = (64, 1),
                 rounds: int = 10, runs: int = 50, call_floor: bool = False) -> dict[str, dict[str, Any]]:
    """Per key: model, format, file, bytes, accuracy, agreement with fp32 and `batch<N>` timings;
    with `call_floor`, also the CALL_FLOOR graph (no accuracy) timed in the same rounds."""
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
    if call_floor:
        with tempfile.TemporaryDirectory() as tmp:  # the session holds the graph; the file can go
            path = write_call_floor_model(Path(tmp) / "floor.onnx", tuple(images.shape[1:]), data.num_classes)
            sessions[CALL_FLOOR] = open_session(path, threads=threads)
        result[CALL_FLOOR] = {"model": None, "format": "onnx", "file": None, "bytes": None, "accuracy": None,
                              "agreement_with_fp32": None}
    for batch in batches:
        x = np.ascontiguousarray(images[:batch])
        calls = {key: (lambda s=s, x=x: s.run(None, {s.get_inputs()[0].name: x})) for key, s in sessions.items()}
        for key, timing in time_interleaved(calls, batch=batch, rounds=rounds, runs=runs).items():
            result[key][f"batch{batch}"] = timing.to_dict()
    return result
