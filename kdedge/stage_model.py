"""Load the finished model of one stage of a run (a QAT student with its fake quantizers)."""

from __future__ import annotations

from torch import nn

from kdedge.layout import QAT_STUDENT, model_path
from kdedge.modelfile import ModelSpecRecord, load_model
from kdedge.run import RunDir


def load_stage_model(run: RunDir, stage: str) -> tuple[nn.Module, ModelSpecRecord]:
    """(model in eval mode, its spec); a missing or corrupt file is a one-line error saying how to rebuild."""
    fix = f"retrain it: `kdedge distill RECIPE --force` ({stage})"
    if stage == QAT_STUDENT:
        from kdedge.quant.modelopt_backend import load_qat_model  # optional extra: only QAT runs need it

        return load_qat_model(model_path(run, stage), fix=fix)
    return load_model(model_path(run, stage), fix=fix)
