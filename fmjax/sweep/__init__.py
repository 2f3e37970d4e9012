"""Hyper-parameter sweeps: every trial an ordinary fmjax run, the search done by Optuna."""
