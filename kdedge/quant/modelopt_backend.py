"""INT8 fake quantization with NVIDIA Model Optimizer (nvidia-modelopt), for QAT-KD.

modelopt is imported inside the functions only: kdedge must import (and its other commands run)
without the optional `[modelopt]` extra.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.extras import MODELOPT_MISSING, modelopt_missing
from kdedge.io import save_torch
from kdedge.modelfile import ModelSpecRecord, load_torch_file

QAT_MODEL_FORMAT = "kdedge-qat-model-1"
MISSING = f"{MODELOPT_MISSING} (quant.backend: modelopt)"


def require_modelopt() -> tuple[ModuleType, ModuleType]:
    """(modelopt.torch.quantization, modelopt.torch.opt), or a one-line KdedgeError saying how to get them."""
    if modelopt_missing():
        raise KdedgeError(MISSING)
    try:
        with warnings.catch_warnings():
            # modelopt warns at import about optional integrations (e.g. transformers) that kdedge never uses
            warnings.simplefilter("ignore")
            import modelopt.torch.opt as mto
            import modelopt.torch.quantization as mtq
    except ImportError as exc:  # installed but broken (e.g. a torch it was not built for): still one line
        raise KdedgeError(f"nvidia-modelopt is installed but does not import ({exc}); "
                          "reinstall it: pip install --force-reinstall 'kdedge[modelopt]'") from None
    return mtq, mto


def quantize_for_qat(model: nn.Module, calib_batches: Iterable[torch.Tensor]) -> nn.Module:
    """Insert INT8 fake quant in place (per-channel weights, per-tensor activations) and calibrate the
    activation ranges (max) on `calib_batches`: normalised inputs already on the model's device."""
    mtq, _ = require_modelopt()
    batches = list(calib_batches)
    if not batches:
        raise KdedgeError("quant.calib_images: no calibration images; the transfer set is empty")

    def forward_loop(m: nn.Module) -> None:
        was_training = m.training
        m.eval()  # BatchNorm statistics and dropout must not change while the ranges are measured
        with torch.no_grad():
            for x in batches:
                m(x)
        m.train(was_training)

    # modelopt prints "Inserted N quantizers" (the stage reports instead) and, calibrating, imports its LLM
    # export helpers, which warn that transformers is missing (kdedge exports nothing through them)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot find transformers")
        return mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)


def quantizer_count(model: nn.Module) -> int:
    """Enabled fake-quant points of a quantized model (for messages and checks)."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return sum(isinstance(m, TensorQuantizer) and m.is_enabled for m in model.modules())


def save_qat_model(path: Path, model: nn.Module, spec: ModelSpecRecord) -> None:
    """Weights (incl. quantizer ranges) + modelopt's state + the spec; loaded weights_only."""
    _, mto = require_modelopt()
    # Contiguous CPU copies: the file must not depend on the training device or memory format.
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": QAT_MODEL_FORMAT, "spec": asdict(spec), "modelopt_state": mto.modelopt_state(model),
               "state_dict": state}
    save_torch(path, payload)


def load_qat_model(path: Path, *, fix: str, sha256: str | None = None) -> tuple[nn.Module, ModelSpecRecord]:
    """Rebuild a saved fake-quant model (eval mode, on the CPU). `fix` ends every error message; `sha256`:
    the checksum the file must have (None: not recorded)."""
    _, mto = require_modelopt()
    obj = load_torch_file(Path(path), expected_format=QAT_MODEL_FORMAT, fix=fix, sha256=sha256)
    try:
        spec = ModelSpecRecord(**obj["spec"])
        modelopt_state, state_dict = obj["modelopt_state"], obj["state_dict"]
    except (KeyError, TypeError):
        raise KdedgeError(f"{path}: incomplete {QAT_MODEL_FORMAT} file (no spec, modelopt_state or "
                          f"state_dict); {fix}") from None
    model = spec.build()
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # parameterless quantized modules (pools) make modelopt warn that it cannot infer a device
            warnings.filterwarnings("ignore", message="Could not identify the device")
            model = mto.restore_from_modelopt_state(model, modelopt_state)
    except Exception as exc:  # noqa: BLE001 - modelopt raises assorted types for a state it cannot apply
        raise KdedgeError(f"{path}: cannot restore the quantizers ({_first_line(exc)}); {fix}") from None
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise KdedgeError(f"{path}: weights do not fit model {spec.name!r} ({_first_line(exc)}); {fix}") from None
    model.eval()
    return model, spec


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:100] if text else type(exc).__name__


def without_fake_quant(quantized: nn.Module, spec: ModelSpecRecord) -> nn.Module:
    """The plain fp32 model holding a QAT model's weights (its quantizers' state dropped), in eval mode."""
    plain = spec.build()
    plain.load_state_dict({k: v for k, v in quantized.state_dict().items() if "_quantizer" not in k})
    return plain.eval()
