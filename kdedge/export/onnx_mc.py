"""MC dropout inside the exported model: one ONNX call gives the MC-averaged prediction and its uncertainty.

The graph (``model.mc.onnx``, format ``onnx-mc``) is exported from :class:`McExportModel`:

* the network is cut where kdedge's torch MC dropout cuts it (``split_at_first_dropout`` of
  kdedge/uncertainty/mc_dropout.py): the deterministic prefix runs once per batch, its output is tiled
  pass-major to [N*B, ...] (``Tile``; row k*B + b is pass k of image b, as in the torch fast path) and the
  stochastic tail runs once on all N*B rows;
* every active ``nn.Dropout`` (p > 0) of the tail becomes an in-graph random mask,
  ``RandomUniformLike -> Less(u, 1 - p) -> Cast -> Mul(1 / (1 - p)) -> Mul(x)``: ops that ONNX Runtime
  (CPU, CUDA) and TensorRT's ONNX parser run; no ``Dropout`` (identity at inference) and no ``Bernoulli``
  (not in TensorRT). The draws carry no seed: ONNX Runtime seeds them per session, TensorRT ignores seeds;
* the logits are reshaped to [N, B, C] and reduced in the graph, in float32 (MC_OUTPUTS, definitions of
  kdedge/uncertainty/stats.py): ``probs`` [B, C] mean of the N softmaxes, ``entropy`` [B] predictive
  entropy in nats, ``variance`` [B] per-class population variance of the probabilities across the N
  passes averaged over the classes (McResult.variance), ``logits`` [B, C] mean of the N logit vectors.

Dynamic batch, opset 18 (dynamo exporter). A model the split cannot cut (no known sequential layout) runs
whole N times (empty prefix). For exact checks, :func:`with_fed_uniforms` turns every RandomUniformLike
into a graph input ``uniforms_<i>`` (forward order, shape [N*B, *features]): fed the same uniforms, the
graph equals the torch model to rounding.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import torch
from onnx import helper
from torch import Tensor, nn

from kdedge.errors import KdedgeError
from kdedge.export.onnx_fp32 import INPUT_NAME, OPSET, export_onnx
from kdedge.uncertainty.mc_dropout import NOT_APPLICABLE, UnsplittableModel, active_dropouts, split_at_first_dropout

MC_OUTPUTS = ("probs", "entropy", "variance", "logits")
UNIFORMS = "uniforms_"  # + index: the debug inputs replacing the random draws
DEFAULT_SAMPLES = 30
# float32's smallest normal: p·log p of an underflowed probability is 0 without xlogy's NaN handling
_TINY = float(torch.finfo(torch.float32).tiny)


class McMask(nn.Module):
    """Dropout at inference as plain ops: keep where u < 1 - p (u uniform in [0, 1)), scale by 1 / (1 - p).
    `fed` (a tensor shaped like the input) replaces the draw: the torch side of the exact checks."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.fed: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        keep = 1.0 - self.p
        u = torch.rand_like(x) if self.fed is None else self.fed
        return x * ((u < keep).to(x.dtype) * (1.0 / keep))


class McExportModel(nn.Module):
    """prefix once -> tile N times -> tail with McMask dropouts -> the MC statistics (MC_OUTPUTS)."""

    def __init__(self, prefix: nn.Module, tail: nn.Module, samples: int, split_at: str | None) -> None:
        super().__init__()
        self.prefix, self.tail, self.samples, self.split_at = prefix, tail, samples, split_at

    def masks(self) -> list[McMask]:
        return [m for m in self.tail.modules() if isinstance(m, McMask)]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = self.prefix(x)
        tiled = h.repeat(self.samples, *([1] * (h.ndim - 1)))  # pass-major, as the torch fast path
        z = self.tail(tiled)
        z = z.reshape(self.samples, -1, z.shape[-1])  # [N, B, C]
        p = torch.softmax(z, -1)
        mean = p.mean(0)
        entropy = -(mean * mean.clamp_min(_TINY).log()).sum(-1)
        d = p - mean
        variance = (d * d).mean(0).mean(-1)
        return mean, entropy, variance, z.mean(0)


def check_samples(samples: int) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise KdedgeError(f"--mc-dropout {samples!r}: the number of MC samples must be an integer >= 2")


def not_applicable(model: nn.Module) -> str | None:
    """Why the model cannot have an MC export (no nn.Dropout with p > 0, or another dropout kind), or None."""
    try:
        found = active_dropouts(model)
    except ValueError as exc:  # Dropout2d & co: their masks have another shape
        return str(exc)
    return None if found else f"{NOT_APPLICABLE} ({type(model).__name__} has no nn.Dropout with p > 0)"


def mc_model(model: nn.Module, samples: int) -> McExportModel:
    """The exportable MC model of `model` (a copy: `model` is not changed), eval mode."""
    check_samples(samples)
    why = not_applicable(model)
    if why is not None:
        raise KdedgeError(why)
    model = copy.deepcopy(model).eval().cpu()
    try:
        split = split_at_first_dropout(model)
        assert split is not None  # it has active dropouts
        prefix, tail = split.head, split.tail
        split_at: str | None = _first_unit_path(model, tail)
    except UnsplittableModel:  # no known layout: the whole network is the tail
        prefix, tail, split_at = nn.Identity(), model, None
    for parent in list(tail.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, McMask(child.p))
    return McExportModel(prefix, tail, samples, split_at).eval()


def _first_unit_path(model: nn.Module, tail: nn.Sequential) -> str | None:
    first = next(iter(tail), None)
    return next((path for path, m in model.named_modules() if m is first), None)


def export_mc_onnx(model: nn.Module, samples: int, sample: Tensor, path: Path) -> McExportModel:
    """Write the MC ONNX of `model` (N = `samples`) to `path`; returns the torch model it was exported from."""
    wrapper = mc_model(model, samples)
    export_onnx(wrapper, sample, path, output_names=MC_OUTPUTS)
    return wrapper


def mask_shapes(wrapper: McExportModel, sample: Tensor) -> list[tuple[int, ...]]:
    """The feature shape of each McMask's input, in forward order (what `uniforms_<i>` holds per row)."""
    seen: list[tuple[int, ...]] = []
    handles = [m.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[1:])))
               for m in wrapper.masks()]
    try:
        with torch.no_grad():
            wrapper(sample[:1])
    finally:
        for h in handles:
            h.remove()
    return seen


def with_fed_uniforms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of an MC graph whose RandomUniformLike nodes are graph inputs instead (in node order, which
    is forward order): the debug form of model.mc.onnx, fp32 or INT8. Returns (model, input names)."""
    model = copy.deepcopy(model)
    graph = model.graph
    names: list[str] = []
    kept = []
    for node in graph.node:
        if node.op_type == "RandomUniformLike":
            name = f"{UNIFORMS}{len(names)}"
            names.append(name)
            for other in graph.node:  # consumers read the input instead of the draw
                for k, value in enumerate(other.input):
                    if value == node.output[0]:
                        other.input[k] = name
            graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        else:
            kept.append(node)
    if not names:
        raise ValueError("the model has no RandomUniformLike node: not an MC export")
    del graph.node[:]
    graph.node.extend(kept)
    return model, names


def uniforms_for(shapes: list[tuple[int, ...]], rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.random((rows, *shape), dtype=np.float32) for shape in shapes]


def torch_fed(wrapper: McExportModel, x: Tensor, uniforms: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The torch MC model's outputs with the given uniforms in place of its draws."""
    masks = wrapper.masks()
    try:
        for m, u in zip(masks, uniforms, strict=True):
            m.fed = torch.from_numpy(u)
        with torch.no_grad():
            return tuple(t.numpy() for t in wrapper(x))
    finally:
        for m in masks:
            m.fed = None


def fed_batches(images: np.ndarray, shapes: list[tuple[int, ...]], samples: int, *, seed: int = 0,
                batch_size: int = 256) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """(normalised batch, its uniforms) over `images`, seeded: every check of a run feeds the same draws."""
    rng = np.random.default_rng(seed)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        yield x, uniforms_for(shapes, samples * len(x), rng)


def session_fed(session, x: np.ndarray, names: list[str], uniforms: list[np.ndarray]) -> list[np.ndarray]:
    return session.run(list(MC_OUTPUTS), {INPUT_NAME: x, **dict(zip(names, uniforms, strict=True))})


def debug_session(path: Path):
    """An ONNX Runtime session of the debug form of the MC model at `path`, and its uniforms' names."""
    from kdedge.export.ort_session import open_session

    debug, names = with_fed_uniforms(onnx.load(os.fspath(path)))
    return open_session(path, content=debug.SerializeToString()), names


def graph_record(path: Path, wrapper: McExportModel) -> dict[str, Any]:
    """What the manifest says of an MC graph: N, the dropouts, where it cuts, the ops it uses."""
    ops = sorted({n.op_type for n in onnx.load(os.fspath(path)).graph.node})
    return {"mc_samples": wrapper.samples, "mc_dropout_p": [m.p for m in wrapper.masks()],
            "mc_split_at": wrapper.split_at, "mc_outputs": list(MC_OUTPUTS), "opset": OPSET, "ops": ops}
