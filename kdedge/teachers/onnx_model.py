"""A teacher given as an ONNX file (any framework), run in ONNX Runtime behind an nn.Module that returns
logits. Its extra outputs are its features: each passes through an Identity submodule named after the
output, so feature KD (hint) reaches them by that name with the usual forward hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.export.ort_session import open_session

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
        # a static batch size (an export without a dynamic batch) is run in chunks of that size
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
        step = self.input_shape[0] or len(array)
        parts = [self.session.run(self.output_names, {self.input_name: array[i:i + step]})
                 for i in range(0, len(array), step)] if len(array) else []
        outputs = [torch.from_numpy(np.concatenate([p[k] for p in parts])).to(x.device)
                   for k in range(len(self.output_names))]
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
        return model.SerializeToString()


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
