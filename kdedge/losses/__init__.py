"""Distillation losses by name: each module registers a :class:`~kdedge.losses.base.LossDef`."""

from kdedge.losses import ce, dkd, hint, hinton, mc_kd, mc_kd_dirichlet, mc_kd_student  # noqa: F401  imported to register their definitions
from kdedge.losses.base import LossDef, LossParams, resolve_temperature
from kdedge.losses.ce import CEParams, ce_loss
from kdedge.losses.dkd import DKDParams, dkd_loss
from kdedge.losses.hint import HintAdapter, HintParams, hint_loss, make_hint_adapter
from kdedge.losses.hinton import HintonParams, hinton_loss, soft_target_loss
from kdedge.losses.registry import LOSSES

__all__ = [
    "LOSSES",
    "CEParams",
    "DKDParams",
    "HintAdapter",
    "HintParams",
    "HintonParams",
    "LossDef",
    "LossParams",
    "ce_loss",
    "dkd_loss",
    "hint_loss",
    "hinton_loss",
    "make_hint_adapter",
    "resolve_temperature",
    "soft_target_loss",
]
