"""kdedge: compress an image classifier for the edge and prove it is still accurate, calibrated and fast."""

__version__ = "0.1.0"
