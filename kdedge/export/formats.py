"""The one table of export formats. Every request is checked against it; a wrong name is an error
that lists the valid ones (never auto-corrected)."""

from __future__ import annotations

from dataclasses import dataclass

from kdedge.errors import KdedgeError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str       # file name = <model stage>/model<suffix>
    runtime: str
    int8: bool
    purpose: str
    needs: str = ""   # the extra that provides it, when not in the core install


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", "onnxruntime, TensorRT, any ONNX runtime", False,
                 "fp32 reference; dynamic batch, opset 18"),
    ExportFormat("onnx-int8", ".int8.onnx", "onnxruntime (CPU)", True,
                 "fast INT8 on CPUs: QDQ, per-channel S8 weights, U8 activations, static calibration"),
    ExportFormat("onnx-int8-trt", ".int8-trt.onnx", "TensorRT (explicit quantization)", True,
                 "symmetric S8 Q/DQ for TensorRT engines (nvidia-modelopt)", needs="modelopt"),
    ExportFormat("engine", ".engine", "TensorRT (this GPU only)", True,
                 "serialized TensorRT engine from the onnx-int8-trt model; build it on the target device",
                 needs="trt"),
)}

# `kdedge export RUN --int8` asks for these (the TensorRT form only where nvidia-modelopt is installed).
INT8_DEFAULT = ("onnx", "onnx-int8", "onnx-int8-trt")


def parse_formats(names: list[str]) -> list[ExportFormat]:
    """The formats named (comma lists allowed), in table order, each checked against FORMATS."""
    wanted: list[str] = []
    for item in names:
        for name in (part.strip() for part in item.split(",")):
            if not name:
                continue
            if name not in FORMATS:
                raise KdedgeError(f"--format {name!r}: unknown export format; valid: {', '.join(FORMATS)}")
            wanted.append(name)
    if "engine" in wanted and "onnx-int8-trt" not in wanted:
        wanted.append("onnx-int8-trt")  # the engine is built from it
    if any(FORMATS[n].int8 for n in wanted) and "onnx" not in wanted:
        wanted.append("onnx")  # INT8 parity is measured against the fp32 export
    return [f for name, f in FORMATS.items() if name in wanted]


def formats_table() -> list[list[str]]:
    return [[f.name, f"model{f.suffix}", f.runtime, f.purpose, f"kdedge[{f.needs}]" if f.needs else "core"]
            for f in FORMATS.values()]
