"""The recipe's typed sections: what a recipe may say, with its ranges and cross-field rules.

Strict pydantic models, frozen once loaded. Loading, error wording and the checks against the
registries live beside this module (load.py, messages.py, registry_checks.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from kdedge.choices import CALIBRATED, CalibMethod, Device, MupeMasks, QuantBackend, QuantInit, QuantMode
from kdedge.recipe.hashing import recipe_hash
from kdedge.recipe.roles import (ModelSpec, OptimizerConfig, RoleConfig, ScheduleConfig,  # noqa: F401  (re-exported)
                                 TrainConfig)
from kdedge.recipe.teacher import TeacherConfig, TeacherInput  # noqa: F401  (re-exported)


class _Strict(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; YAML already gives real types
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(BaseModel):
    """Which dataset, where it lives, and how the validation split is cut.

    Keys other than the ones below are the dataset loader's own options (e.g. ``image_size`` for
    ``image_folder``); they are checked against the loader's signature.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    dataset: str = Field(description="registered dataset name (kdedge list datasets)")
    root: Optional[Path] = Field(None, strict=False, description="directory holding the dataset files; a relative "
                                 "path is relative to the recipe file (data travels with the recipe)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out for validation")
    split_seed: int = Field(0, ge=0, description="seed of the stratified train/validation split")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossSpec(BaseModel):
    """A registered loss, its weight in the sum, and its own options (checked against its params)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: str = Field(description="registered loss name (kdedge.losses)")
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="weight of this term in the total loss")
    warmup_epochs: int = Field(0, ge=0, le=10_000, description="scale the weight by min(epoch / warmup_epochs, 1), "
                               "epochs counted from 1 (DKD's warm-up: 20); 0 = full weight from the start")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # no warm-up is dumped as before the field existed (existing runs keep their hash); one that is set
        out = handler(self)  # shapes the weights, so it is in the dict and the hash
        if out.get("warmup_epochs") == 0:
            del out["warmup_epochs"]
        return out


class ReducedTransfer(_Strict):
    per_class: int = Field(ge=1, description="images kept per class (stratified)")
    seed: int = Field(0, ge=0)


class TransferConfig(_Strict):
    """The images the student learns from: the training split, a reduced one, or an unlabeled one."""

    reduced: Optional[ReducedTransfer] = None
    unlabeled: bool = Field(False, description="drop the labels: the teacher's outputs are the only targets")
    pseudo_labels: bool = Field(False, description="unlabeled only: use the teacher's argmax as hard labels")

    @model_validator(mode="after")
    def _check(self) -> "TransferConfig":
        if self.pseudo_labels and not self.unlabeled:
            raise ValueError("pseudo_labels only applies with unlabeled: true")
        return self


class DistillConfig(_Strict):
    losses: list[LossSpec] = Field(min_length=1, description="summed with their weights")
    transfer: TransferConfig = TransferConfig()
    baseline: bool = Field(True, description="also train the same student on hard labels only (no KD)")
    cache_teacher: bool = Field(True, description="compute teacher outputs once when inputs are not augmented")

    @model_validator(mode="after")
    def _check_weights(self) -> "DistillConfig":
        if all(loss.weight == 0 for loss in self.losses):
            raise ValueError("every distillation loss has weight 0; give at least one a positive weight")
        return self


class SweepConfig(_Strict):
    """One student per value of one recipe field (seed 001: accuracy vs temperature)."""

    set: str = Field(pattern=r"^(student|distill)\.[A-Za-z0-9_.\[\]]+$",
                     description="dotted field path under student. or distill., e.g. distill.losses[0].temperature")
    values: list[Any] = Field(min_length=1, max_length=100)
    ensemble: bool = Field(False, description="also vote the sweep's students as an ensemble (majority, mean-prob, best-k)")
    mc_dropout: int = Field(0, ge=0, le=10_000,
                            description="MC-dropout passes on the teacher and every sweep student, with MUPE and "
                                        "overlaid MC reliability curves (seed 000's uncertainty transfer); 0 = off")
    mupe_masks: MupeMasks = Field("independent", description="MUPE's dropout masks: independent (seed 000) or "
                                  "shared (identical where shapes match: lower variance, not comparable)")


class QuantConfig(_Strict):
    """Quantized distillation (QAT-KD): the student trained again under INT8 fake quantization."""

    mode: QuantMode = Field(description="qat: quantization-aware training with the KD losses")
    backend: QuantBackend = Field(description="modelopt: NVIDIA Model Optimizer fake quant "
                                                     "(pip install 'kdedge[modelopt]')")
    init: QuantInit = Field("student", description="student: fine-tune the fp32 KD student; "
                                                                        "scratch: a fresh student from random init")
    calib_images: int = Field(512, gt=0, le=1_000_000,
                              description="training images (class-balanced) that calibrate the activation ranges")
    train: TrainConfig | None = Field(None, description="default: init student -> the student's budget with "
                                                           "epochs // 4 (at least 1), lr / 10, no warm-up; "
                                                           "init scratch -> the student's budget")

    def resolve_train(self, student: TrainConfig) -> TrainConfig:
        """The QAT training budget: `train` when given, else derived from the student's."""
        if self.train is not None:
            return self.train
        if self.init == "scratch":
            return student
        # Fine-tuning an already trained net: a short run at a small lr keeps it near the fp32 optimum.
        epochs = max(1, student.epochs // 4)
        raw = student.model_dump()
        raw["epochs"] = epochs
        raw["optimizer"]["lr"] = student.optimizer.lr / 10
        raw["schedule"]["warmup_epochs"] = 0.0
        scaled = {m * epochs // student.epochs for m in student.schedule.milestones}
        raw["schedule"]["milestones"] = sorted(scaled & set(range(1, epochs)))
        return TrainConfig.model_validate(raw)


class ExportConfig(_Strict):
    """Defaults of `kdedge export` for this recipe's runs (command-line options override them)."""

    min_agreement: float = Field(0.99, ge=0, le=1, description="parity gate: least top-1 agreement of an INT8 "
                                                                "export with its fp32 model on the test split")
    max_accuracy_drop: float = Field(0.005, ge=0, le=1, description="parity gate: largest test accuracy drop "
                                                                    "(0.005 = 0.5 pt)")
    calib_images: int = Field(512, gt=0, le=1_000_000, description="real training images (class-balanced) "
                                                                    "that calibrate INT8 scales")
    calib_method: CalibMethod = "minmax"
    max_fp32_layers: int = Field(3, ge=0, le=10_000, description="an INT8 export that fails the parity gate keeps "
                                                                 "up to this many of its most sensitive layers in "
                                                                 "fp32 (0: refused at once)")


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100,
                      description="run name: outputs go to <output_dir>/<name>")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Device = "auto"
    output_dir: Path = Field(Path("runs"), strict=False, description="runs go to <output_dir>/<name>; relative "
                             "to the working directory (like every command's RUN argument)")
    data: DataConfig
    teacher: TeacherConfig
    student: Optional[RoleConfig] = None
    distill: Optional[DistillConfig] = None
    sweep: Optional[SweepConfig] = None
    assistants: dict[str, RoleConfig] = Field(default_factory=dict,
                                              description="extra models for chains, by name")
    chain: Optional[list[str]] = Field(None, min_length=3, description="teacher -> assistant(s) -> student")
    symmetry: bool = Field(False, description="distil the trained student back into an untrained teacher copy")
    quant: QuantConfig | None = Field(None, description="also train the student under INT8 fake quantization "
                                                           "(QAT-KD) into <run>/student_qat")
    export: ExportConfig | None = Field(None, description="parity-gate thresholds and INT8 calibration for "
                                                          "`kdedge export`")

    @model_validator(mode="after")
    def _check_roles(self) -> "Recipe":
        if self.distill is not None and self.student is None:
            raise ValueError("distill needs a student: section (model + train)")
        if self.quant is not None and self.distill is None:
            # both inits train with the KD losses; init student also starts from the KD student
            raise ValueError(f"quant (init: {self.quant.init}) needs a distill: section and a student: "
                             "(it trains the student under fake quantization with the KD losses)")
        if (self.sweep or self.chain or self.symmetry) and self.distill is None:
            raise ValueError("sweep, chain and symmetry need a distill: section")
        for i, loss in enumerate(self.distill.losses if self.distill else []):
            if loss.warmup_epochs > self.student.train.epochs:
                raise ValueError(f"distill.losses[{i}].warmup_epochs ({loss.warmup_epochs}) is longer than "
                                 f"student.train.epochs ({self.student.train.epochs}): the loss would never reach "
                                 "its weight; lower it (the DKD paper warms up over 20 of 240 epochs)")
        if (self.chain or self.symmetry) and any(loss.name == "hint" for loss in self.distill.losses):
            raise ValueError("chain and symmetry distil between other architectures than teacher -> student, "
                             "so their hint paths would not apply; use logit losses (hinton, dkd) with them")
        self._check_foreign_teacher()
        if self.chain is not None:
            if self.chain[0] != "teacher" or self.chain[-1] != "student":
                raise ValueError(f"chain must start with teacher and end with student, got {self.chain}")
            for name in self.chain[1:-1]:
                if name not in self.assistants:
                    defined = ", ".join(self.assistants) or "none"
                    raise ValueError(f"chain refers to {name!r}, which is not defined under assistants: "
                                     f"(defined: {defined})")
        return self

    def _check_foreign_teacher(self) -> None:
        """What needs the teacher's PyTorch architecture, refused up front for a teacher that lacks it."""
        teacher, source = self.teacher, self.teacher.source
        if self.symmetry and (not teacher.is_pytorch or teacher.train is None):
            raise ValueError(f"symmetry trains an untrained copy of the teacher's architecture with the teacher's "
                             f"budget, so it needs teacher.model and teacher.train (this teacher is given by "
                             f"{source}: without them); drop symmetry or add model:/train:")
        if self.sweep is not None and self.sweep.mc_dropout and not teacher.is_pytorch:
            raise ValueError(f"sweep.mc_dropout runs the teacher's dropout layers, which a teacher given by {source}: "
                             "does not expose; give the teacher as checkpoint: + model: or set mc_dropout: 0")
        self._check_input_against_data()
        if source == "exported" and self.distill is not None and any(l.name == "hint" for l in self.distill.losses):
            raise ValueError("feature KD (hint) reads teacher features by module path, which a torch.export "
                             "program does not keep; export the teacher to ONNX with the feature tensor as an "
                             "extra output (onnx:, hint teacher: <output name>) or give checkpoint: + model:")

    def _check_input_against_data(self) -> None:
        """teacher.input against what the recipe itself says of the data (the rest is checked on the data)."""
        given, data = self.teacher.input, self.data.options
        if given is None:
            return
        channels = {"rgb": 3, "grayscale": 1}.get(data.get("color"))
        pairs = [("image_size", given.image_size, data.get("image_size"), "image_size"),
                 ("channels", given.channels, channels, "color"), ("mean", given.mean, data.get("mean"), "mean"),
                 ("std", given.std, data.get("std"), "std")]
        for field, theirs, ours, data_key in pairs:
            if theirs is not None and ours is not None and theirs != ours:
                raise ValueError(f"teacher.input.{field} is {theirs} but data.{data_key} gives {data[data_key]!r}; "
                                 f"make data.{data_key} match what the teacher was trained on")

    def uses_calibrated_temperature(self) -> bool:
        return self.distill is not None and any(
            loss.options.get("temperature") == CALIBRATED for loss in self.distill.losses)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def hash(self) -> str:
        """Hash of what the teacher, student and baseline depend on: formatting, comments, key order,
        where the run is written (output_dir) and the experiment sections do not change it."""
        return recipe_hash(self.to_dict())
