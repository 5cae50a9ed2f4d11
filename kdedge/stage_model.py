"""Load the finished model of one stage of a run (a QAT student with its fake quantizers), verified."""

from __future__ import annotations

from torch import nn

from kdedge.errors import KdedgeError
from kdedge.layout import EXPORTED_MODEL_FILE, ONNX_MODEL_FILE, QAT_STUDENT, model_file
from kdedge.modelfile import ModelSpecRecord, load_model
from kdedge.run import RunDir


def load_stage_model(run: RunDir, stage: str, *, fix: str | None = None) -> tuple[nn.Module, ModelSpecRecord]:
    """(model in eval mode, its spec). A missing, corrupt or changed file (its SHA-256 is checked against
    the stage record's, where the run recorded one) is a one-line error saying how to rebuild it."""
    fix = fix or f"retrain it: `kdedge distill RECIPE --force` ({stage})"
    path, sha256 = model_file(run, stage)
    if path.name in FOREIGN_KINDS:
        return _load_foreign(run, stage, path, sha256, fix)
    if stage == QAT_STUDENT:
        from kdedge.quant.modelopt_backend import load_qat_model  # optional extra: only QAT runs need it

        return load_qat_model(path, fix=fix, sha256=sha256)
    return load_model(path, fix=fix, sha256=sha256)


FOREIGN_KINDS = {EXPORTED_MODEL_FILE: "exported", ONNX_MODEL_FILE: "onnx"}


def _load_foreign(run: RunDir, stage: str, path, sha256: str | None, fix: str) -> tuple[nn.Module, ModelSpecRecord]:
    """A user's own teacher kept in its own form (torch.export program or ONNX), its bytes verified."""
    import hashlib

    from kdedge.teachers.load import load_foreign  # only runs with such a teacher need it

    try:
        content = path.read_bytes()
    except OSError:
        raise KdedgeError(f"{path}: missing or unreadable; {fix}") from None
    if sha256 is not None and hashlib.sha256(content).hexdigest() != sha256:
        raise KdedgeError(f"{path}: changed since it was written (its SHA-256 is not the one in {run.manifest_path}); "
                          f"{fix}")
    record = run.stage_record(stage) or {}
    try:
        spec = ModelSpecRecord(**record["spec"])
    except (KeyError, TypeError):
        raise KdedgeError(f"{run.manifest_path}: stages.{stage}.spec is missing or damaged; {fix}") from None
    return load_foreign(FOREIGN_KINDS[path.name], path, content).eval(), spec
