"""What an export producer is given: the user's export options and one job (a model, the file to
write, the images it may trace or calibrate on). Producers read these and nothing of the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kdedge.choices import CalibMethod, Int8Quantization
from kdedge.export.parity import ParityThresholds
from kdedge.inputs import InputStats, normalise

if TYPE_CHECKING:
    from kdedge.export.formats import ExportFormat

# A producer that measures its own artifact's logits (ONNX Runtime cannot run a TensorRT engine)
# returns them under this key; they feed the parity gate and are not written to the manifest.
LOGITS = "_logits"
# ... and one whose gate compares with something other than the fp32 ONNX's logits (the MC formats: the fp32
# MC model fed the same dropout masks) returns that reference under this key.
REFERENCE_LOGITS = "_reference_logits"


@dataclass(frozen=True)
class ExportOptions:
    formats: list[ExportFormat]
    models: list[str] | None = None                 # None: every finished model of the run
    calib_images: int = 512
    calib_method: CalibMethod = "minmax"
    quantization: Int8Quantization = "auto"
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    allow_drop: bool = False
    force: bool = False
    engine_max_batch: int = 64
    max_fp32_layers: int = 3                        # INT8 fallback budget (kdedge/export/fallback.py); 0: off
    mc_samples: int = 30                            # MC-dropout formats: samples N inside the graph (--mc-dropout)

    def settings(self, fmt: ExportFormat, *, own_scales: bool) -> dict[str, Any]:
        """What shapes the artifact: a recorded export with other settings is not reused. `own_scales`:
        the model is a QAT student, which carries its own INT8 scales."""
        gate = {"parity_thresholds": asdict(self.thresholds)} if fmt.gated else {}
        return {**gate, **fmt.settings(self, own_scales)}


@dataclass(frozen=True)
class ExportJob:
    fp32: nn.Module               # the model (for a QAT student: its weights without fake quantization)
    quantized: nn.Module | None   # a QAT student's fake-quant model (its own INT8 scales)
    out: Path                     # the file to write (a temp name, renamed into place once checked)
    source: Path | None           # the finished artifact of the format's `built_from`
    options: ExportOptions
    calibration: np.ndarray       # normalised real training images, stratified by class (INT8 ranges)
    test_images: np.ndarray       # the uint8 test split
    stats: InputStats
    input_shape: tuple[int, int, int]
    # Layers the producer keeps in fp32 (ONNX node names for onnx-int8, torch module names for the TensorRT
    # form), chosen by kdedge/export/fallback.py; and the held-out normalised images it ranks them on.
    fp32_layers: tuple[str, ...] = ()
    held_out: np.ndarray | None = None

    def sample(self) -> torch.Tensor:
        """Two normalised test images: what the exporters trace the model with."""
        return torch.from_numpy(normalise(self.test_images[:2], self.stats))
