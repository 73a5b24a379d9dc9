"""Evaluation: pure metrics, the report, plots and lesion-mask handling."""
