"""A teacher given as an ONNX file (any framework), run in ONNX Runtime behind an nn.Module that returns
logits. Its extra outputs are its features: each passes through an Identity submodule named after the
output, so feature KD (hint) reaches them by that name with the usual forward hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.export.ort_session import open_session, run_any_batch

FIX = ("export it with one image input [N, C, H, W] (float32, normalised) and the logits as its first output, "
       "e.g. torch.onnx.export(model, (example,), 'teacher.onnx', input_names=['input'], output_names=['logits'], "
       "dynamic_shapes=...)")


class OnnxTeacher(nn.Module):
    foreign_kind = "an ONNX file"  # formats that need PyTorch layers skip it
    runs_in_torch = False  # the bench times it as `ort`, not as a torch model

    def __init__(self, path: Path, content: bytes, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        """`content`: the self-contained model (self_contained_onnx) read from `path`."""
        super().__init__()
        self.path = Path(path)
        self.content = content
        self.session = open_session(path, fix=FIX, providers=providers, content=content)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise KdedgeError(f"{path}: teacher.onnx takes {found}; kdedge feeds one float32 image batch "
                              f"[N, C, H, W]; {FIX}")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in outputs]
        # a static batch size (an export without a dynamic batch) is run in chunks (run_any_batch)
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape)
        for name in self.output_names[1:]:
            if name.isidentifier():  # module names cannot hold '.'; such outputs are not features
                self.add_module(name, nn.Identity())

    def weight_count(self) -> int:
        """Its parameters, counted from the graph's initializers (it has no torch parameters)."""
        import onnx

        graph = onnx.load_from_string(self.content).graph
        return sum(int(np.prod(t.dims)) for t in graph.initializer)

    def feature_paths(self) -> list[str]:
        """The names feature KD may use: the model's extra outputs."""
        return [name for name, _ in self.named_children()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        outputs = [torch.from_numpy(out).to(x.device) for out in run_any_batch(self.session, array, self.output_names)]
        for name, value in zip(self.output_names[1:], outputs[1:]):
            if name in self._modules:
                self._modules[name](value)  # the hooks of a FeatureTap see it here
        return outputs[0]

    def kdedge_onnx(self) -> bytes:
        """The file as kdedge's exports name things (input `images`, one output `logits`), graph unchanged:
        the fp32 reference that the INT8 exports of this teacher are built from and timed against."""
        import onnx

        from kdedge.export.onnx_fp32 import INPUT_NAME, OUTPUT_NAME

        model = onnx.load_from_string(self.content)
        graph = model.graph
        renames = {graph.input[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
        while len(graph.output) > 1:
            graph.output.pop()
        for value in [*graph.input, *graph.output]:
            value.name = renames.get(value.name, value.name)
        for node in graph.node:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        if self.input_shape[0] is not None:
            return self._with_dynamic_batch(model)
        return model.SerializeToString()

    def _with_dynamic_batch(self, model) -> bytes:
        """kdedge's exports take any batch (INT8 calibration, bench at batch 1 and 64): a fixed batch size is
        made dynamic when the graph still computes the same logits that way, else refused with the fix."""
        for value in (model.graph.input[0], model.graph.output[0]):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        _free_reshape_batch(model.graph, self.input_shape[0])
        content = model.SerializeToString()
        fixed = self.input_shape[0]
        x = np.random.default_rng(0).standard_normal((fixed + 1, *self.input_shape[1:])).astype(np.float32)
        try:
            dynamic = open_session(self.path, content=content).run(None, {model.graph.input[0].name: x})[0]
            same = np.allclose(dynamic, run_any_batch(self.session, x, self.output_names[:1])[0], atol=1e-4)
        except Exception:  # ORT raises its own types when a reshape is tied to the fixed batch size
            same = False
        if not same:
            raise KdedgeError(f"{self.path}: this ONNX teacher was exported with a fixed batch size of {fixed}, "
                              "which its graph depends on, so it cannot be exported for other batch sizes; "
                              "re-export it with a dynamic batch (dynamic_shapes / dynamic_axes) to export and "
                              "bench it (distillation works as it is)")
        return content


def self_contained_onnx(path: Path) -> bytes:
    """The model with any external weight files (torch's exporter writes <name>.onnx.data beside large
    models) folded in, so the run keeps one file and its checksum covers the weights too."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=True)
        return model.SerializeToString()
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError ... for a foreign file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise KdedgeError(f"{path}: teacher.onnx is not a readable ONNX model, or its external weights file is "
                          f"missing ({reason}); {FIX}") from None


def _free_reshape_batch(graph, fixed: int) -> None:
    """Exporters bake the batch size into Reshape targets ([1, 64]); a leading `fixed` becomes -1 where the
    target has no -1 yet. Only a heuristic: the caller keeps the result only if the logits are unchanged."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        target = numpy_helper.to_array(initializers[node.input[1]]).copy()
        if target.ndim == 1 and len(target) and target[0] == fixed and -1 not in target:
            target[0] = -1
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))
