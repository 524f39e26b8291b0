"""Evaluation: click simulation, metrics, the per-instance loop, predictors and baselines."""
