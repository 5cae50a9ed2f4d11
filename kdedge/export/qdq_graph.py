"""What an INT8 ONNX graph really contains: Q/DQ nodes, their zero points, per-channel scales."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class QdqSummary:
    quantize_nodes: int
    dequantize_nodes: int
    per_channel_dequantize: int   # DequantizeLinear with a vector of scales (per-channel weights)
    zero_points_all_zero: bool    # symmetric quantization (what TensorRT requires)
    zero_point_types: list[str]
    integer_ops: list[str]        # MatMulInteger, ConvInteger, ... of dynamic quantization

    def to_dict(self) -> dict:
        return asdict(self)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # the TorchScript exporter writes scales and zero points as Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def summarise_qdq(path: Path) -> QdqSummary:
    graph = onnx.load(os.fspath(path)).graph
    values = _constants(graph)
    q = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    per_channel = sum(1 for n in dq if n.input[1] in values and values[n.input[1]].size > 1)
    # A missing zero-point input means 0 (of type uint8) by the ONNX spec.
    zero_points = [values[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros(1, np.uint8)
                   for n in q + dq if len(n.input) <= 2 or not n.input[2] or n.input[2] in values]
    return QdqSummary(
        quantize_nodes=len(q), dequantize_nodes=len(dq), per_channel_dequantize=per_channel,
        zero_points_all_zero=bool(zero_points) and all(not np.any(z) for z in zero_points),
        zero_point_types=sorted({str(z.dtype) for z in zero_points}),
        integer_ops=sorted({n.op_type for n in graph.node if n.op_type.endswith("Integer")}))
