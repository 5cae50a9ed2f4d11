"""Load the finished model of one stage of a run (a QAT student with its fake quantizers), verified."""

from __future__ import annotations

from torch import nn

from kdedge.layout import QAT_STUDENT, model_file
from kdedge.modelfile import ModelSpecRecord, load_model
from kdedge.run import RunDir


def load_stage_model(run: RunDir, stage: str, *, fix: str | None = None) -> tuple[nn.Module, ModelSpecRecord]:
    """(model in eval mode, its spec). A missing, corrupt or changed file (its SHA-256 is checked against
    the stage record's, where the run recorded one) is a one-line error saying how to rebuild it."""
    fix = fix or f"retrain it: `kdedge distill RECIPE --force` ({stage})"
    path, sha256 = model_file(run, stage)
    if stage == QAT_STUDENT:
        from kdedge.quant.modelopt_backend import load_qat_model  # optional extra: only QAT runs need it

        return load_qat_model(path, fix=fix, sha256=sha256)
    return load_model(path, fix=fix, sha256=sha256)
