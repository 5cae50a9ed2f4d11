"""The trained roles' sections of a recipe: a model (registered name + options) and its training budget."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from kdedge.choices import Optimizer, Precision, Schedule


class _Strict(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; YAML already gives real types
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelSpec(BaseModel):
    """A registered model name plus its keyword arguments (checked against its signature)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: str = Field(description="registered model name (kdedge list models)")

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerConfig(_Strict):
    name: Optimizer = "sgd"
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adamw)")
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, lt=1)


class ScheduleConfig(_Strict):
    name: Schedule = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from lr/100, in epochs")
    milestones: list[int] = Field(default_factory=list, description="step schedule: epochs where lr *= gamma")
    gamma: float = Field(0.1, gt=0, le=1)


class TrainConfig(_Strict):
    """One model's training budget. Cross-field rules are checked in `_check_schedule`."""

    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    eval_batch_size: int = Field(1000, ge=1, le=65_536)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: bool = Field(True, description="random crop (+ flip where the dataset allows it)")
    crop_padding: int = Field(2, ge=0, le=16)
    channels_last: bool = Field(True, description="NHWC memory format for conv nets (faster on CPU)")
    eval_every: int = Field(1, ge=1, le=10_000, description="evaluate val and test every N epochs and after the "
                            "last (long schedules on small transfer sets spend most of their time evaluating); "
                            "the trained weights do not depend on it")
    precision: Precision = Field("auto", description="fp32, bf16 (autocast) or fp16 (autocast + gradient scaler); "
                                 "auto: bf16 on a CUDA GPU that has it, else fp16 on CUDA, fp32 on the cpu")
    compile: bool = Field(False, description="torch.compile the model for training (slow first steps)")
    deterministic: bool = Field(False, description="CUDA: deterministic kernels (no cuDNN autotuning); slower. "
                                "The cpu is repeatable without it")
    sync_bn: bool = Field(False, description="multi-GPU runs: SyncBatchNorm (statistics over the global batch) "
                          "instead of rank 0's; CUDA only")

    @model_validator(mode="after")
    def _check_schedule(self) -> "TrainConfig":
        sched = self.schedule
        if sched.warmup_epochs > self.epochs:
            raise ValueError(f"schedule.warmup_epochs ({sched.warmup_epochs}) is longer than epochs ({self.epochs})")
        if sched.milestones and sched.name != "step":
            raise ValueError(f"schedule.milestones only apply to name: step (this schedule is {sched.name})")
        ms = list(sched.milestones)
        if ms and (ms != sorted(set(ms)) or ms[0] < 1 or ms[-1] >= self.epochs):
            raise ValueError(f"schedule.milestones must be increasing epochs in 1..{self.epochs - 1}, got {ms}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # unset new fields are dumped as before they existed, so existing runs keep their hash; one that
        # is set is dumped (and hashed, unless kdedge.recipe.hashing leaves it out as rounding-only)
        out = handler(self)
        for key, default in _UNSET_TRAIN_DEFAULTS.items():
            if key in out and out[key] == default:
                del out[key]
        return out


_UNSET_TRAIN_DEFAULTS = {"precision": "auto", "compile": False, "deterministic": False, "sync_bn": False}


class RoleConfig(_Strict):
    """A model to be trained: its architecture and its training budget."""

    model: ModelSpec
    train: TrainConfig
