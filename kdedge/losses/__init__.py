"""Distillation losses by name: each module registers a :class:`~kdedge.losses.base.LossDef`."""

from kdedge.registry import Registry

LOSSES: Registry = Registry("loss")

# the loss modules register on import; LOSSES must exist before they are imported
from kdedge.losses import dkd, hint, hinton  # noqa: E402,F401
from kdedge.losses.base import LossDef, LossParams, resolve_temperature  # noqa: E402
from kdedge.losses.dkd import DKDParams, dkd_loss  # noqa: E402
from kdedge.losses.hint import HintAdapter, HintParams, hint_loss, make_hint_adapter  # noqa: E402
from kdedge.losses.hinton import HintonParams, hinton_loss, soft_target_loss  # noqa: E402

__all__ = [
    "LOSSES",
    "DKDParams",
    "HintAdapter",
    "HintParams",
    "HintonParams",
    "LossDef",
    "LossParams",
    "dkd_loss",
    "hint_loss",
    "hinton_loss",
    "make_hint_adapter",
    "resolve_temperature",
    "soft_target_loss",
]
