"""The recipe's teacher: trained here, read from another run, or brought by the user (a state_dict of a
registered architecture, a torch.export program, or an ONNX file), with the input contract a foreign
teacher was trained under."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from kdedge.recipe.roles import ModelSpec, TrainConfig

# The fields a user's own teacher is given by; at most one of them, and none with from_run.
FOREIGN_SOURCES = ("checkpoint", "exported", "onnx")


class TeacherInput(BaseModel):
    """What a foreign teacher expects (checked against the data and the teacher file before any work)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    channels: Optional[int] = Field(None, ge=1, le=4, description="image channels (1 grayscale, 3 RGB)")
    image_size: Optional[int] = Field(None, ge=4, le=4096, description="square input side in pixels")
    mean: Optional[list[float]] = Field(None, description="per-channel mean on the [0,1] scale it was trained with")
    std: Optional[list[float]] = Field(None, description="per-channel std on the [0,1] scale it was trained with")
    num_classes: Optional[int] = Field(None, ge=2, le=100_000, description="how many classes it predicts")
    classes: Optional[list[str]] = Field(None, description="class names in the teacher's output order")

    @model_validator(mode="after")
    def _check(self) -> "TeacherInput":
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std (or neither)")
        if self.mean is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one per channel")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be > 0 per channel, got {self.std}")
        if self.mean is not None and self.channels is not None and len(self.mean) != self.channels:
            raise ValueError(f"mean/std have {len(self.mean)} values for {self.channels} channels; give one per "
                             "channel (1 for grayscale, 3 for RGB)")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            twice = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"classes names {', '.join(twice)} more than once; list each class once, in the "
                             "teacher's output order")
        if self.classes is not None and self.num_classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"classes lists {len(self.classes)} names but num_classes is {self.num_classes}")
        return self


class TeacherConfig(BaseModel):
    """The teacher: trained here (model + train), taken from another run's finished teacher (from_run),
    or the user's own (checkpoint + model, exported, or onnx)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Optional[ModelSpec] = Field(None, description="the architecture: trained here with train:, or the one "
                                                          "checkpoint:'s weights are for")
    train: Optional[TrainConfig] = Field(None, description="the teacher's training budget (trained here)")
    calibrate: bool = Field(False, description="fit the teacher's temperature T* on the validation split "
                                               "before distilling (implied by temperature: calibrated)")
    from_run: Optional[Path] = Field(None, strict=False, description="reuse the finished teacher of this run "
                                     "directory (relative to the working directory, same data); its model and "
                                     "training are read from that run")
    checkpoint: Optional[Path] = Field(None, strict=False, description="a state_dict of model: (a .pt/.pth file, "
                                       "loaded weights_only), relative to the recipe file")
    exported: Optional[Path] = Field(None, strict=False, description="a torch.export program (torch.export.save, "
                                     ".pt2), relative to the recipe file")
    onnx: Optional[Path] = Field(None, strict=False, description="an ONNX teacher (input N,C,H,W normalised; "
                                 "first output = logits), run in ONNX Runtime; relative to the recipe file")
    input: Optional[TeacherInput] = Field(None, description="the input contract of a foreign teacher")
    eval_batch_size: int = Field(1000, ge=1, le=65_536, description="batch size of the teacher's evaluation and "
                                 "soft targets when it has no train: section")

    @model_validator(mode="after")
    def _check(self) -> "TeacherConfig":
        given = [name for name in FOREIGN_SOURCES if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one teacher source, not {' and '.join(given)}")
        if given and self.from_run is not None:
            raise ValueError(f"{given[0]} and from_run are two teachers; keep one")
        if self.checkpoint is not None and self.model is None:
            raise ValueError("checkpoint needs model: {name: ...}, the registered architecture its weights are "
                             "for (kdedge list models); for a model class of your own, give exported: or onnx:")
        if given and given[0] != "checkpoint" and (self.model is not None or self.train is not None):
            raise ValueError(f"a teacher given by {given[0]}: carries its own architecture and weights; remove "
                             "teacher.model and teacher.train")
        if not given and self.from_run is None and (self.model is None or self.train is None):
            raise ValueError("the teacher needs model: and train:, from_run: a run directory with a trained "
                             "teacher, or your own teacher: checkpoint: (with model:), exported: or onnx:")
        if self.input is not None and not given:
            raise ValueError("input: describes a teacher brought from elsewhere (checkpoint, exported or onnx); "
                             "a teacher trained by kdedge takes its input from the data")
        return self

    @property
    def source(self) -> str | None:
        """Which foreign source the teacher comes from (checkpoint, exported, onnx), or None."""
        return next((name for name in FOREIGN_SOURCES if getattr(self, name) is not None), None)

    @property
    def source_path(self) -> Path | None:
        return getattr(self, self.source) if self.source else None

    @property
    def is_pytorch(self) -> bool:
        """The architecture is known to kdedge (MC dropout, symmetry and module-path features need it)."""
        return self.source in (None, "checkpoint")

    @property
    def batch_size(self) -> int:
        return self.train.eval_batch_size if self.train is not None else self.eval_batch_size

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # unset new fields are dumped as before they existed, so existing runs keep their hash
        out = handler(self)
        for key in (*FOREIGN_SOURCES, "input"):
            if out.get(key) is None:
                out.pop(key, None)
        if out.get("eval_batch_size") == 1000:
            del out["eval_batch_size"]
        return out
