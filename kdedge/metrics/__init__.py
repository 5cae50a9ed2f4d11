"""Classification and calibration metrics: accuracy, NLL, ECE/MCE and their bins (pure functions on tensors)."""

from kdedge.metrics.calibration import CalibrationBins, calibration_bins, ece, mce
from kdedge.metrics.classification import accuracy, nll
from kdedge.metrics.report import classification_report

__all__ = [
    "CalibrationBins",
    "accuracy",
    "calibration_bins",
    "classification_report",
    "ece",
    "mce",
    "nll",
]
