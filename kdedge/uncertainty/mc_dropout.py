"""MC dropout: N stochastic forward passes with dropout on and batch norm in eval mode.

How it is made fast and checkable:

* the model stays in **eval mode** the whole time (BN uses its running statistics and never updates
  them). Dropout is re-applied by forward hooks on the active ``nn.Dropout`` modules (p > 0): each
  multiplies the (identity) eval output by a keep-mask ``rand >= p`` and by ``1 / (1 - p)``;
* the masks come from explicit ``torch.Generator``s, one per (seed, stream, batch index, dropout
  module), drawn one pass at a time with shape [B, *features]. ``stream`` names the model's own mask
  stream: two models with the same seed and different streams draw independent masks, with the same
  stream (and same dropout shapes) identical ones. The naive loop (N full forward passes) and the
  fast path (below) therefore draw the *same* masks in the same order, and must agree to rounding;
* fast path: the network is split at the first unit holding an active dropout
  (:func:`split_at_first_dropout`); the part before it runs once per batch, its output is repeated
  N times along the batch dim (pass-major, in chunks to bound memory) and only the tail runs per chunk.

Masks depend on (seed, stream, batch_size, samples): the same call gives the same result, bit for bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from torch import Tensor, nn

from kdedge.errors import KdedgeError
from kdedge.inference import model_device, uses_conv
from kdedge.models.base import ConvClassifier
from kdedge.models.mlp import MLP
from kdedge.uncertainty.stats import mc_metrics_from, summarise_passes

NOT_APPLICABLE = "no dropout: MC dropout not applicable"


class McDropoutNotApplicable(KdedgeError):
    """The model has no dropout with p > 0: MC samples would all be equal, so there is nothing to report."""


class UnsplittableModel(ValueError):
    """The fast path cannot cut this model at its first dropout (the naive loop still works)."""


class DropoutSplit(NamedTuple):
    head: nn.Sequential  # deterministic: runs once per batch
    tail: nn.Sequential  # from the unit holding the first active dropout to the logits


@dataclass(frozen=True)
class McResult:
    """Per-sample MC-dropout outputs (definitions in :mod:`kdedge.uncertainty.stats`)."""

    mean_probs: Tensor  # [n, C] float32, mean of the N softmaxes
    confidence: Tensor  # [n] max of mean_probs
    entropy: Tensor  # [n] predictive entropy of mean_probs, nats
    variance: Tensor  # [n] per-class variance across passes, averaged over classes (population)
    predicted_variance: Tensor  # [n] variance across passes of the predicted class's probability
    mutual_information: Tensor  # [n] entropy minus mean per-pass entropy (BALD)
    mean_log_probs: Tensor  # [n, C] float32, mean of the N log-softmaxes (a Dirichlet's sufficient statistic)
    samples: int
    seed: int
    batch_size: int
    stream: str  # the mask stream ("" = the seed's default stream)
    method: str  # "fast" or "naive"
    split_at: str | None  # module path where the fast path starts repeating (None for naive)
    note: str  # why this method, in words


def active_dropouts(model: nn.Module) -> list[tuple[str, nn.Dropout]]:
    """The ``nn.Dropout`` modules with p > 0, in registration order (= forward order for kdedge models).

    Other dropout kinds (Dropout2d, AlphaDropout, ...) with p > 0 are refused: their masks have
    another shape/semantics, and silently treating them as identity would understate uncertainty."""
    found = []
    for path, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            if type(m) is not nn.Dropout:
                raise ValueError(f"{path}: {type(m).__name__} is not supported by MC dropout (only nn.Dropout)")
            found.append((path, m))
    return found


def _expand(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Flatten plain nn.Sequential containers (their forward is exactly the composition of children)."""
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            yield from _expand(f"{prefix}.{name}", child)
    else:
        yield prefix, module


def forward_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's forward as a list of (path, module) applied in order; raises UnsplittableModel
    when the model's layout is not one of kdedge's known sequential ones."""
    if isinstance(model, ConvClassifier) and type(model).forward is ConvClassifier.forward:
        return [*_expand("stem", model.stem), *_expand("stages", model.stages), *_expand("head", model.head)]
    if isinstance(model, MLP) and type(model).forward is MLP.forward:
        # MLP.forward flattens with torch.flatten(x, 1), which is what nn.Flatten(1) does
        return [("flatten", nn.Flatten(1)), *_expand("layers", model.layers), ("classifier", model.classifier)]
    raise UnsplittableModel(f"{type(model).__name__} has no known sequential layout to split")


def _find_split(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], int] | None:
    active = {id(m) for _, m in active_dropouts(model)}
    if not active:
        return None
    units = forward_units(model)
    for i, (_, unit) in enumerate(units):
        if any(id(m) in active for m in unit.modules()):
            return units, i
    raise UnsplittableModel(f"the active dropout of {type(model).__name__} is not reached by its forward units")


def split_at_first_dropout(model: nn.Module) -> DropoutSplit | None:
    """(head, tail) with ``tail(head(x)) == model(x)``, cut before the first unit (finest plain
    Sequential child) holding an active dropout; None when the model has no dropout with p > 0.
    The two Sequentials share the model's modules (no copies). Raises UnsplittableModel."""
    found = _find_split(model)
    if found is None:
        return None
    return _split_from(*found)


def _split_from(units: list[tuple[str, nn.Module]], i: int) -> DropoutSplit:
    return DropoutSplit(nn.Sequential(*(m for _, m in units[:i])), nn.Sequential(*(m for _, m in units[i:])))


def _derive_seed(*parts: int | str) -> int:
    # a hash, not seed + k: nearby seeds/batches must not give overlapping mask streams
    digest = hashlib.sha256(":".join(["kdedge-mc-dropout", *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _Masks:
    """Forward hooks applying seeded keep-masks; one generator per active dropout, reset per batch."""

    def __init__(self, n_dropouts: int, seed: int, stream: str = "") -> None:
        self.n, self.seed = n_dropouts, seed
        self.stream = (stream,) if stream else ()  # "" keeps the masks drawn before streams existed
        self.rows = 0
        self.gens: list[torch.Generator] = []

    def start_batch(self, index: int, rows: int, device: torch.device) -> None:
        self.rows = rows
        self.gens = [torch.Generator(device=device).manual_seed(_derive_seed(self.seed, *self.stream, index, i))
                     for i in range(self.n)]

    def hook(self, i: int, p: float) -> Callable:
        scale = 1.0 / (1.0 - p)

        def apply(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            x = inputs[0]
            passes, rest = divmod(x.shape[0], self.rows)
            if rest:
                raise RuntimeError(f"dropout input has {x.shape[0]} rows, not a multiple of the batch {self.rows}")
            # one draw of [B, *features] per pass, in pass order: the naive loop and the batched
            # tail consume each generator identically, so their masks are the same
            keep = [torch.rand((self.rows, *x.shape[1:]), generator=self.gens[i], device=x.device) >= p
                    for _ in range(passes)]
            return x * torch.cat(keep).to(x.dtype) * scale

        return apply


def _batches(inputs: Tensor | Iterable, batch_size: int) -> Iterator[Tensor]:
    if isinstance(inputs, Tensor):
        for start in range(0, inputs.shape[0], batch_size):
            yield inputs[start:start + batch_size]
        return
    for item in inputs:  # loader-ish: tensors, or (images, labels, ...) tuples
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, Tensor):
            raise TypeError(f"MC dropout inputs must be tensors or (tensor, ...) batches, got {type(x).__name__}")
        yield x


def _naive_passes(model: nn.Module, x: Tensor, samples: int) -> Tensor:
    return torch.stack([torch.softmax(model(x).float(), 1) for _ in range(samples)])


def _fast_passes(split: DropoutSplit, x: Tensor, samples: int, chunk_elements: int) -> Tensor:
    h = split.head(x)
    rows = h.shape[0]
    per_chunk = max(1, chunk_elements // max(1, h[0].numel() * rows))  # passes per tail call
    channels_last = h.ndim == 4 and h.is_contiguous(memory_format=torch.channels_last)
    out = []
    for k0 in range(0, samples, per_chunk):
        m = min(per_chunk, samples - k0)
        hx = h.repeat(m, *([1] * (h.ndim - 1)))  # pass-major: rows j*B..(j+1)*B are pass k0 + j
        if channels_last:  # keep the layout the naive pass sees, so the convs pick the same kernels
            hx = hx.contiguous(memory_format=torch.channels_last)
        out.append(torch.softmax(split.tail(hx).float(), 1).view(m, rows, -1))
    return torch.cat(out)


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@torch.inference_mode()
def mc_dropout_predict(model: nn.Module, inputs: Tensor | Iterable, *, samples: int = 100, seed: int = 0,
                       stream: str = "", batch_size: int = 256, device: torch.device | str | None = None,
                       fast: bool = True, chunk_elements: int = 1 << 22) -> McResult:
    """MC-dropout predictions of `model` (already on `device`; default: where its weights are, so a model
    on a GPU runs its N passes and draws its masks there) for normalised float images [n, C, H, W]
    (split into `batch_size` batches) or an iterable of such batches / (images, labels) pairs.

    Raises McDropoutNotApplicable when the model has no dropout with p > 0. `fast=False` (or a model
    the split cannot handle) runs the naive loop; the result says which (`method`, `note`).
    `chunk_elements` bounds the repeated activations per tail call (elements, default 4M = 16 MiB fp32).
    `stream` selects the model's own mask stream (e.g. its name), so that models compared at one seed
    draw independent masks; models at the same seed and stream share masks where their shapes match."""
    _check_int("samples", samples, 1)
    _check_int("seed", seed, 0)
    _check_int("batch_size", batch_size, 1)
    _check_int("chunk_elements", chunk_elements, 1)
    device = model_device(model) if device is None else torch.device(device)
    dropouts = active_dropouts(model)
    if not dropouts:
        raise McDropoutNotApplicable(f"{NOT_APPLICABLE} ({type(model).__name__} has no nn.Dropout with p > 0)")
    split, split_at, note = None, None, "naive loop requested (fast=False)"
    if fast:
        try:
            units, i = _find_split(model)  # type: ignore[misc] - not None: dropouts exist
            split, split_at = _split_from(units, i), units[i][0]
            note = f"layers before {split_at} run once; the tail runs {samples}x batched"
        except UnsplittableModel as e:
            note = f"naive loop: fast split not possible ({e})"

    channels_last = uses_conv(model)
    if not isinstance(stream, str):
        raise ValueError(f"stream must be a string, got {stream!r}")
    masks = _Masks(len(dropouts), seed, stream)
    was_training = model.training
    model.eval()  # BN on running stats, never updated; dropout comes from the hooks only
    handles = [d.register_forward_hook(masks.hook(i, d.p)) for i, (_, d) in enumerate(dropouts)]
    parts: list[dict[str, Tensor]] = []
    try:
        for b, x in enumerate(_batches(inputs, batch_size)):
            x = x.to(device)
            if channels_last and x.ndim == 4:  # as in predict_logits: faster convs on CPU
                x = x.contiguous(memory_format=torch.channels_last)
            masks.start_batch(b, x.shape[0], device)
            probs = _fast_passes(split, x, samples, chunk_elements) if split else _naive_passes(model, x, samples)
            parts.append({k: v.cpu() for k, v in summarise_passes(probs).items()})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not parts:
        raise ValueError("MC dropout got no images")
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return McResult(**cat, samples=samples, seed=seed, batch_size=batch_size, stream=stream,
                    method="fast" if split else "naive", split_at=split_at, note=note)


def mc_metrics(result: McResult, labels: Tensor, *, n_bins: int = 10) -> dict[str, float | int | str]:
    """Accuracy, NLL, ECE, MCE of the MC-averaged predictions and the mean uncertainties."""
    per_sample = {"confidence": result.confidence, "entropy": result.entropy, "variance": result.variance,
                  "predicted_variance": result.predicted_variance,
                  "mutual_information": result.mutual_information}
    return {**mc_metrics_from(result.mean_probs, labels, per_sample, n_bins=n_bins),
            "samples": result.samples, "method": result.method}
