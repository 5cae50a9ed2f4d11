"""`kdedge bench`: every model of a run on every runtime: accuracy, calibration, uncertainty, speed."""
