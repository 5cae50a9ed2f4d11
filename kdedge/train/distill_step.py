"""The distillation step: a closure over student, teacher targets and the recipe's weighted losses.

Teacher targets come either from a cache (computed once over the transfer set: valid when inputs are
not augmented, since the teacher then sees the same image every epoch) or from the teacher run per
batch under inference mode.

A loss entry with ``warmup_epochs: W`` is weighted ``weight * min(epoch / W, 1)`` in epoch ``epoch``
(counted from 1, as mdistiller's trainer does for DKD). The loop tells the step which epoch it trains
(`DistillStep.start_epoch`), so the weight is a pure function of the epoch and a resumed run weighs
each epoch as an uninterrupted one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

from kdedge.data import ImageData
from kdedge.errors import KdedgeError
from kdedge.features import FeatureTap
from kdedge.inference import model_device, uses_conv
from kdedge.inputs import InputStats
from kdedge.losses import LossDef, make_hint_adapter
from kdedge.train.batches import prepare_batch
from kdedge.train.distributed import gather_rows, local_slice, unwrap
from kdedge.uncertainty.mc_dropout import active_dropouts, mc_dropout_predict

LabelMode = Literal["labels", "none"]  # "none": unlabeled transfer set, the teacher is the only target
CACHE_LIMIT_BYTES = 2 * 1024**3        # hinted teacher features above this are recomputed per batch
MC_KD_STREAM = "mc_kd-teacher"         # the teacher's mask stream for mc_kd targets (not the bench's streams)


@dataclass(frozen=True)
class KDTerm:
    """One weighted loss of the recipe, its temperature already resolved to a number."""

    name: str
    weight: float
    definition: LossDef
    options: dict[str, Any]
    warmup_epochs: int = 0  # 0: full weight from the first epoch

    def weight_at(self, epoch: int) -> float:
        """The term's weight in `epoch` (1-based): weight * min(epoch / warmup_epochs, 1)."""
        if self.warmup_epochs == 0:
            return self.weight
        return self.weight * min(epoch / self.warmup_epochs, 1.0)

    @property
    def feature_paths(self) -> tuple[str, str] | None:
        if self.definition.kind != "features":
            return None
        return self.options["student"], self.options["teacher"]


McKey = tuple[int, int, str]  # (samples, seed, statistic) of a teacher MC target


@dataclass
class TeacherCache:
    logits: torch.Tensor                                      # [N, C] on the training device
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    # (samples, seed, statistic) -> [N, C]: the MC mean probabilities or mean log-probabilities (LossDef.teacher_mc_stat)
    mc_targets: dict[McKey, torch.Tensor] = field(default_factory=dict)


@torch.inference_mode()
def teacher_outputs(teacher: nn.Module, data: ImageData, stats: InputStats, paths: list[str], *,
                    batch_size: int, device: torch.device, mc: tuple[McKey, ...] = ()) -> TeacherCache:
    """Eval-mode teacher logits (and tapped features) over a whole set, in order. In a multi-process run
    each rank computes its share of the set and the shares are gathered, so every rank holds all of it.
    `mc`: (samples, seed, statistic) keys whose MC-dropout statistic (`mean_probs` or `mean_log_probs`) to
    cache (kdedge.uncertainty's fast path, stream MC_KD_STREAM; masks follow the batch index, so a
    multi-process run draws other masks). Keys sharing (samples, seed) share one MC run."""
    teacher.eval()
    mean, std = stats.tensors(device)
    logits, feats = [], {p: [] for p in paths}
    lo, hi = local_slice(len(data))  # (0, len) in one process
    with FeatureTap(teacher, paths) as tap:
        for start in range(lo, hi, batch_size):
            x = prepare_batch(data.images[start:min(start + batch_size, hi)], mean, std,
                              channels_last=uses_conv(teacher))
            logits.append(teacher(x).float())
            for p in paths:
                feats[p].append(tap.features[p].float())
    mc_targets = {}
    for samples, seed in dict.fromkeys((n, s) for n, s, _ in mc):
        batches = (prepare_batch(data.images[s:min(s + batch_size, hi)], mean, std) for s in range(lo, hi, batch_size))
        result = mc_dropout_predict(teacher, batches, samples=samples, seed=seed, stream=MC_KD_STREAM,
                                    batch_size=batch_size)
        for stat in sorted({st for n, s, st in mc if (n, s) == (samples, seed)}):
            mc_targets[(samples, seed, stat)] = gather_rows(getattr(result, stat).to(device), len(data))
    return TeacherCache(gather_rows(torch.cat(logits), len(data)),
                        {p: gather_rows(torch.cat(v), len(data)) for p, v in feats.items()}, mc_targets)


def mc_key(term: KDTerm) -> McKey:
    return term.options["samples"], term.options["seed"], term.definition.teacher_mc_stat


def mc_keys(terms: list[KDTerm]) -> tuple[McKey, ...]:
    """The (samples, seed, statistic) keys of the teacher MC targets the terms need (mc_kd*)."""
    return tuple(sorted({mc_key(t) for t in terms if t.definition.teacher_mc}))


def check_mc_terms(terms: list[KDTerm], teacher: nn.Module, student: nn.Module | None = None) -> None:
    """MC losses need dropout where they sample: a recipe error naming the field, before any work."""
    for i, t in enumerate(terms):
        where = f"distill.losses[{i}] ({t.name})"
        if t.definition.teacher_mc and not active_dropouts(teacher):
            raise KdedgeError(f"{where}: the teacher has no nn.Dropout with p > 0, so its MC-dropout predictive is its "
                              "plain softmax; train it with dropout (e.g. teacher.model.dropout: 0.2) or use hinton")
        if t.definition.student_mc and student is not None and not active_dropouts(unwrap(student)):
            raise KdedgeError(f"{where}: the student has no nn.Dropout with p > 0; set student.model.dropout "
                              "(e.g. 0.2) or use mc_kd")
        if t.definition.student_mc and t.weight and any(u.feature_paths for u in terms):
            raise KdedgeError(f"{where}: cannot be combined with a feature (hint) loss (the student runs "
                              "student_samples passes per batch); use mc_kd with hint")


def _mc_targets(teacher: nn.Module, cache: TeacherCache | None, keys: tuple[McKey, ...],
                x: torch.Tensor, idx: torch.Tensor, epoch: int | None) -> dict[McKey, torch.Tensor]:
    if cache is not None:
        idx_dev = idx.to(cache.logits.device)
        return {k: cache.mc_targets[k][idx_dev] for k in keys}
    # augmented inputs: per batch, on masks named by the epoch and the batch's first image (resumable)
    stream = f"{MC_KD_STREAM}:{epoch}:{int(idx[0])}"
    results = {(n, seed): mc_dropout_predict(teacher, x, samples=n, seed=seed, stream=stream, batch_size=x.shape[0])
               for n, seed in dict.fromkeys((n, s) for n, s, _ in keys)}
    return {(n, seed, stat): getattr(results[(n, seed)], stat).to(x.device) for n, seed, stat in keys}


def _student_passes(student: nn.Module, x: torch.Tensor, passes: int) -> torch.Tensor:
    """[K, B, C]: the student (train mode: dropout on) on the batch repeated K times, in one call."""
    xs = x.repeat(passes, *([1] * (x.ndim - 1)))
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        xs = xs.contiguous(memory_format=torch.channels_last)
    return student(xs).view(passes, x.shape[0], -1)


def feature_cache_fits(teacher: nn.Module, probe: torch.Tensor, paths: list[str], n: int) -> bool:
    """Whether caching the hinted teacher features for n images stays under CACHE_LIMIT_BYTES."""
    if not paths:
        return True
    with torch.inference_mode(), FeatureTap(teacher, paths) as tap:
        teacher.eval()(probe[:1].to(model_device(teacher)))
        per_image = sum(tap.features[p][0].numel() * 4 for p in paths)
    return per_image * n <= CACHE_LIMIT_BYTES


class DistillStep:
    """A StepFn that also learns the epoch it trains (`start_epoch`, called by the training loop)."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int | None],
                                    tuple[torch.Tensor, torch.Tensor]], warms_up: bool) -> None:
        self._fn, self._warms_up = fn, warms_up
        self.epoch: int | None = None

    def start_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be an integer >= 1 (epochs count from 1), got {epoch!r}")
        self.epoch = epoch

    def __call__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._warms_up and self.epoch is None:
            # a wrapper that hides start_epoch would otherwise train without the warm-up, silently
            raise RuntimeError("a loss warms up over epochs but the step was never told the epoch "
                               "(call start_epoch before the first batch)")
        return self._fn(x, y, idx, self.epoch)


def make_distill_step(student: nn.Module, teacher: nn.Module, terms: list[KDTerm], *, label_mode: LabelMode,
                      cache: TeacherCache | None, probe: torch.Tensor) -> tuple[DistillStep, nn.ModuleList]:
    """Build the step and the trainable hint adapters (shaped from one probe batch, in eval mode so that
    probing changes no BatchNorm statistics)."""
    hinted = [t for t in terms if t.feature_paths]
    student_paths = sorted({t.feature_paths[0] for t in hinted})
    teacher_paths = sorted({t.feature_paths[1] for t in hinted})
    adapters = nn.ModuleList()
    if hinted:
        with torch.no_grad():
            s_feats = _probe(unwrap(student), student_paths, probe)
            t_feats = _probe(teacher, teacher_paths, probe)
        for term in hinted:
            s_path, t_path = term.feature_paths
            try:
                adapters.append(make_hint_adapter(s_feats[s_path], t_feats[t_path]))
            except ValueError as exc:  # e.g. a map against a vector: only the recipe can fix it
                raise KdedgeError(f"distill.losses: hint student: {s_path} / teacher: {t_path}: {exc}; pick "
                                  "feature paths of the same kind (both maps or both vectors)") from None
    # hooks on the user's model (inside DDP in a multi-process run) see the features of every forward
    student_tap = FeatureTap(unwrap(student), student_paths) if student_paths else None
    teacher_tap = FeatureTap(teacher, teacher_paths) if teacher_paths and cache is None else None
    check_mc_terms(terms, teacher, student)
    keys = mc_keys(terms)
    passes = max((t.options["student_samples"] for t in terms if t.definition.student_mc and t.weight), default=0)

    def step(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if cache is not None:
            idx_dev = idx.to(cache.logits.device)
            t_logits = cache.logits[idx_dev]
            t_feats = {p: cache.features[p][idx_dev] for p in teacher_paths}
        else:
            with torch.inference_mode():
                t_logits = teacher(x).float()
                t_feats = {p: teacher_tap.features[p] for p in teacher_paths}
        t_mc = _mc_targets(teacher, cache, keys, x, idx, epoch) if keys else {}
        s_passes = _student_passes(student, x, passes) if passes else None
        s_logits = student(x) if s_passes is None else s_passes[0]
        labels = y if label_mode == "labels" else None
        total: torch.Tensor | None = None
        adapter_iter = iter(adapters)
        for term in terms:
            if term.weight == 0:
                if term.feature_paths:
                    next(adapter_iter)
                continue
            if term.feature_paths:
                s_path, t_path = term.feature_paths
                value = term.definition.fn(student_tap.features[s_path], t_feats[t_path], next(adapter_iter))
            elif term.definition.teacher_mc:
                s_in = s_passes[:term.options["student_samples"]] if term.definition.student_mc else s_logits
                value = term.definition.fn(s_in, t_mc[mc_key(term)], labels, **term.options)
            else:
                value = term.definition.fn(s_logits, t_logits, labels, **term.options)
            weight = term.weight_at(epoch) if term.warmup_epochs else term.weight
            value = value if weight == 1.0 else weight * value  # skip a no-op multiply
            total = value if total is None else total + value
        if total is None:
            raise ValueError("every distillation loss has weight 0; give at least one a positive weight")
        return total, s_logits

    return DistillStep(step, warms_up=any(t.warmup_epochs and t.weight for t in terms)), adapters


def _probe(model: nn.Module, paths: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    was_training = model.training
    device = model_device(model)
    model.eval()
    try:
        with FeatureTap(model, paths) as tap:
            model(x.to(device))
            return {p: tap.features[p].detach().cpu() for p in paths}
    finally:
        model.train(was_training)
