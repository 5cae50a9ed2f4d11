"""The one training loop (`fit`) and the step functions it runs (supervised now; distillation later)."""

from kdedge.train.loop import FitResult, TrainingData, fit
from kdedge.train.steps import StepFn, supervised_step

__all__ = ["FitResult", "StepFn", "TrainingData", "fit", "supervised_step"]
