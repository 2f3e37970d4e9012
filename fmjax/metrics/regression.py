"""Regression metrics on host arrays: MSE, MAE and R², in the targets' own units.

Written with numpy (tests check them against scikit-learn's, whose import would cost every eval
a second); vector targets average over outputs as sklearn's `multioutput="uniform_average"`.
"""

import numpy as np


def r2_per_output(preds_EO: np.ndarray, targets_EO: np.ndarray) -> np.ndarray:
    """1 - SS_res / SS_tot for each output; an output whose targets are constant scores 1 if it
    is predicted exactly, else 0 (sklearn's `force_finite` rule)."""
    ss_res_O = ((targets_EO - preds_EO) ** 2).sum(axis=0)
    ss_tot_O = ((targets_EO - targets_EO.mean(axis=0)) ** 2).sum(axis=0)
    r2_O = 1.0 - np.divide(ss_res_O, ss_tot_O, out=np.zeros_like(ss_res_O), where=ss_tot_O > 0)
    return np.where((ss_tot_O == 0) & (ss_res_O > 0), 0.0, r2_O)


def regression_metrics(preds_EO: np.ndarray, targets_EO: np.ndarray) -> dict[str, float]:
    """All eval metrics of a regressor; `loss` is the MSE the model was trained on."""
    preds_EO = np.asarray(preds_EO, np.float64).reshape(len(preds_EO), -1)
    targets_EO = np.asarray(targets_EO, np.float64).reshape(len(targets_EO), -1)
    mse = float(((preds_EO - targets_EO) ** 2).mean())
    return {
        "loss": mse,
        "mse": mse,
        "mae": float(np.abs(preds_EO - targets_EO).mean()),
        "r2": float(r2_per_output(preds_EO, targets_EO).mean()),
    }
