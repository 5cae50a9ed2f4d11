"""The one training loop (`fit`) behind every model of a run, and the steps it runs: supervised
(train/steps.py) and knowledge distillation (train/distill_step.py)."""

from kdedge.train.loop import FitResult, fit
from kdedge.train.steps import StepFn, supervised_step

__all__ = ["FitResult", "StepFn", "fit", "supervised_step"]
