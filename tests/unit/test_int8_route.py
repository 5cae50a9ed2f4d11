"""Every INT8 row says which route it took (PTQ, PTQ + N fp32 layers, QAT-KD): in the bench report
(report.md and the terminal table), `kdedge export`'s closing table and `kdedge show`'s exports table.
Hand-made export records and report dicts; the expected strings are formatted from their numbers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from kdedge.bench.report import rows, terminal_table
from kdedge.bench.report_decision import route_lines
from kdedge.export.route import fp32_layers, int8_route, speed_cost

BEFORE, AFTER = 0.951, 0.992
LAYERS = ["/features/0/conv/Conv", "/classifier/fc/Gemm"]
SPEED = {"measured": True, "runtime": "onnxruntime CPU, 1 thread", "batch": 32, "runs": 15,
         "median_ms": {"fp32": 3.0, "int8": 1.5, "int8_fallback": 1.8}, "fallback_over_int8": 1.8 / 1.5,
         "speedup_over_fp32": {"int8": 2.0, "int8_fallback": 3.0 / 1.8}}


def plain(fmt: str = "onnx-int8", quantization: str = "static") -> dict:
    return {"format": fmt, "quantization": quantization, "fp32_layers": [], "fp32_fallback": None,
            "parity": {"agreement": 0.995, "accuracy": 0.81, "accuracy_drop": 0.001},
            "parity_failures": [], "allowed_by_flag": False, "bytes": 4096, "file": f"exports/s/model.{fmt}"}


def rescued() -> dict:
    return {**plain(), "fp32_layers": list(LAYERS),
            "fp32_fallback": {"layers": [{"name": n, "module": "", "op": "Conv", "error": 0.1} for n in LAYERS],
                              "before": {"agreement": BEFORE}, "after": {"agreement": AFTER}, "passed": True,
                              "speed": SPEED}}


def test_route_of_each_kind_of_export():
    assert int8_route("student", plain()) == "PTQ"
    assert int8_route("student", plain(quantization="dynamic")) == "PTQ (dynamic)"
    assert int8_route("student", rescued()) == f"PTQ + 2 fp32 layers (agreement {BEFORE:.1%} → {AFTER:.1%})"
    assert int8_route("student", {**rescued(), "fp32_layers": LAYERS[:1], "fp32_fallback": None}) == \
        "PTQ + 1 fp32 layer"
    qat = plain("onnx-int8-trt", "QAT scales (nvidia-modelopt)")
    assert int8_route("student_qat", qat) == "QAT-KD"
    # ONNX Runtime's INT8 of the QAT student calibrates its own ranges: the QAT weights, PTQ scales
    assert int8_route("student_qat", plain()) == "QAT-KD weights + PTQ"
    assert int8_route("student", plain("onnx")) is None and int8_route("teacher", None) is None
    # the terminal's narrow column
    assert int8_route("student", rescued(), short=True) == "PTQ+2 fp32"
    assert int8_route("student_qat", plain(), short=True) == "QAT-KD+PTQ"
    # a TensorRT engine has no layers of its own: those of the file it was built from
    engine = {"format": "engine", "built_from": "model.int8-trt.onnx", "tensorrt": "10.0"}
    assert int8_route("student", engine) == "PTQ (as its model.int8-trt.onnx)"
    assert int8_route("student_qat", engine) == "QAT-KD (as its model.int8-trt.onnx)"
    assert fp32_layers(rescued()) == LAYERS
    # older records without the producer's list: the fallback's layers
    assert fp32_layers({**rescued(), "fp32_layers": None}) == LAYERS
    assert speed_cost(rescued()).startswith(f"{1.8 / 1.5:.2f}× the plain INT8 time, speed-up over fp32 {3.0 / 1.8:.2f}×")
    assert speed_cost(plain()) == "not timed"
    failed = rescued()
    failed["fp32_fallback"].update(passed=False, speed=None)
    assert speed_cost(failed).startswith("not timed: the gate still failed")


def report_dict() -> dict:
    def runtime(precision: str, export: dict | None) -> dict:
        r = {"accuracy": 0.8, "nll": 0.5, "ece": 0.02, "mce": 0.1, "size_bytes": 10_000, "precision": precision,
             "batch1": {"median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.1}, "batch64": {"images_per_s": 5000.0}}
        return {**r, "export": {k: v for k, v in export.items() if k not in ("file", "bytes")}} if export else r

    return {"run": "runs/x", "device": "cpu", "batch": 64, "ratios": {}, "models": {
        "student": {"parameters": 1000, "macs": 2_000_000, "runtimes": {
            "torch": runtime("fp32", None), "ort": runtime("fp32", plain("onnx")),
            "ort-int8": runtime("int8", rescued()), "openvino-int8": runtime("int8", rescued())}},
        "baseline": {"parameters": 1000, "macs": 2_000_000, "runtimes": {"ort-int8": runtime("int8", plain())}},
        "student_qat": {"parameters": 1000, "macs": 2_000_000, "runtimes": {
            "ort-int8": runtime("int8", plain())}}}}


def test_bench_report_marks_each_int8_row_with_its_route():
    report = report_dict()
    route = {(r[0], r[1]): r[-1] for r in rows(report)}
    rescued_route = f"PTQ + 2 fp32 layers (agreement {BEFORE:.1%} → {AFTER:.1%})"
    assert route == {("student", "torch"): "—", ("student", "ort"): "—", ("student", "ort-int8"): rescued_route,
                     ("student", "openvino-int8"): rescued_route, ("baseline", "ort-int8"): "PTQ",
                     ("student_qat", "ort-int8"): "QAT-KD weights + PTQ"}
    md = "\n".join(route_lines(report))
    assert md.startswith("## INT8 routes")
    assert f"| student | ort-int8 | {rescued_route} |" in md and "| baseline | ort-int8 | PTQ |" in md
    # the layers kept in fp32 and their speed cost, for both runtimes that run the rescued file
    for name in LAYERS:
        assert f"`{name}`" in md
    assert md.count(f"{1.8 / 1.5:.2f}× the plain INT8 time") == 2
    console = Console(record=True, width=250)
    console.print(terminal_table(report))
    text = console.export_text()
    assert "INT8 route" in text and "PTQ+2 fp32" in text and "QAT-KD+PTQ" in text
    assert "N layers kept in fp32" in text


def test_fp32_only_report_has_no_route_section():
    report = report_dict()
    report["models"] = {"student": {**report["models"]["student"],
                                    "runtimes": {"torch": report["models"]["student"]["runtimes"]["torch"]}}}
    assert route_lines(report) == []


def test_export_and_show_tables_list_the_fp32_layers(tmp_path: Path):
    from kdedge.cli.export import export_table
    from kdedge.summary import exports_table

    exports = {"student": {"onnx": plain("onnx"), "onnx-int8": rescued()}, "baseline": {"onnx-int8": plain()}}
    run = SimpleNamespace(read_manifest=lambda: json.loads(json.dumps({"exports": exports})))  # what show reads
    for table in (export_table(tmp_path, exports), exports_table(run)):
        console = Console(record=True, width=300)
        console.print(table)
        text = " ".join(console.export_text().split())  # the caption wraps at the table's width
        assert "PTQ+2 fp32" in text  # the cell; the caption under the table says the rest
        assert (f"student onnx-int8: PTQ + 2 fp32 layers (agreement {BEFORE:.1%} → {AFTER:.1%}), in fp32: "
                f"{', '.join(LAYERS)}") in text
        assert "│ baseline │ onnx-int8 │" in text and "baseline onnx-int8:" not in text  # plain PTQ: no note
