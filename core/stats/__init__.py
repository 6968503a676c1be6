"""Statistics of a model's predictions: operating points, bootstrap intervals, calibration."""
