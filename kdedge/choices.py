"""Every fixed set of choices kdedge accepts, spelled once.

Each choice is a ``Literal`` type (what the recipe schema and typed options use) and a tuple of its
values taken from it (what the CLI validates against and error messages list). Light on purpose:
no kdedge or torch imports, so the bench command and the recipe schema can both use it.
"""

from __future__ import annotations

from typing import Literal, get_args

# where training and evaluation run (recipe `device:`, `--device` of the training commands)
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)

# where `kdedge bench` measures; over SSH (--host) only the machines without a local CUDA torch
BenchDevice = Literal["cpu", "cuda", "jetson"]
BENCH_DEVICES: tuple[str, ...] = get_args(BenchDevice)
RemoteBenchDevice = Literal["cpu", "jetson"]
REMOTE_BENCH_DEVICES: tuple[str, ...] = get_args(RemoteBenchDevice)

# INT8 range calibration of ONNX Runtime static quantization (recipe export.calib_method, --calib-method)
CalibMethod = Literal["minmax", "percentile", "entropy"]
CALIB_METHODS: tuple[str, ...] = get_args(CalibMethod)

# ONNX Runtime INT8 form (--quantization); auto = dynamic for models without convolutions
Int8Quantization = Literal["auto", "static", "dynamic"]
INT8_QUANTIZATIONS: tuple[str, ...] = get_args(Int8Quantization)

# quantized distillation (recipe quant:): how, with what, starting from which weights
QuantMode = Literal["qat"]
QUANT_MODES: tuple[str, ...] = get_args(QuantMode)
QuantBackend = Literal["modelopt"]
QUANT_BACKENDS: tuple[str, ...] = get_args(QuantBackend)
QuantInit = Literal["student", "scratch"]
QUANT_INITS: tuple[str, ...] = get_args(QuantInit)

# training (recipe train.optimizer.name, train.schedule.name)
Optimizer = Literal["sgd", "adamw"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
Schedule = Literal["cosine", "step", "constant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
# recipe train.precision: what training computes in (auto: chosen per device, kdedge.train.precision)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# MC-dropout masks behind MUPE (recipe sweep.mupe_masks, bench --mupe-masks): each model its own masks
# (seed 000's definition, the default), or identical masks where shapes match (common random numbers)
MupeMasks = Literal["independent", "shared"]
MUPE_MASKS: tuple[str, ...] = get_args(MupeMasks)

# the temperature value that means "the teacher's fitted T*" (a number is the other choice)
CalibratedTemperature = Literal["calibrated"]
CALIBRATED: str = get_args(CalibratedTemperature)[0]
