"""Predictive uncertainty: MC dropout (with a batched fast path) and MUPE teacher/student agreement."""

from kdedge.uncertainty.mc_dropout import (
    NOT_APPLICABLE,
    DropoutSplit,
    McDropoutNotApplicable,
    McResult,
    UnsplittableModel,
    active_dropouts,
    forward_units,
    mc_dropout_predict,
    mc_metrics,
    split_at_first_dropout,
)
from kdedge.uncertainty.stats import mupe, mupe_parts, nll_from_probs, summarise_passes

__all__ = [
    "NOT_APPLICABLE",
    "DropoutSplit",
    "McDropoutNotApplicable",
    "McResult",
    "UnsplittableModel",
    "active_dropouts",
    "forward_units",
    "mc_dropout_predict",
    "mc_metrics",
    "mupe",
    "mupe_parts",
    "nll_from_probs",
    "split_at_first_dropout",
    "summarise_passes",
]
