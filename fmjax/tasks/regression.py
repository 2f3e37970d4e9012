"""Regression: mean squared error training; MSE, MAE and R² at eval, in the targets' own units.

Targets (a batch's "labels": [B] or [B, outputs], real-valued) are standardised with the training
split's per-output mean and std (`DataInfo.target_mean`, `target_std`), so that a freshly
initialised head starts at the right scale whatever the units (diabetes targets run to 346). The
gradient is that of the MSE in standardised units; `train/loss`, like `eval/loss`, reports the MSE
in the targets' units (the same objective, each output's term scaled by its std²), so the two
curves share an axis. Eval maps predictions back before `fmjax.metrics.regression` reduces them.
"""

import jax.numpy as jnp
import numpy as np

from fmjax.errors import UserError
from fmjax.metrics.regression import regression_metrics
from fmjax.models import build_model
from fmjax.tasks.base import Task


class Regression(Task):
    EVAL_METRICS = ("loss", "mse", "mae", "r2")
    MAXIMISED = ("r2",)

    def __init__(self, config, info):
        super().__init__(config, info)
        if not info.target_mean:
            raise UserError(f"task 'regression' needs real-valued targets, but data "
                            f"'{config.data.name}' has class labels (regression data: diabetes)")
        self.mean_O = np.asarray(info.target_mean, np.float32)
        std_O = np.asarray(info.target_std, np.float32)
        self.std_O = np.where(std_O > 0, std_O, 1.0)   # a constant target has nothing to scale
        self.model = build_model(config.model, num_classes=len(self.mean_O))

    def targets(self, batch) -> jnp.ndarray:
        """The batch's targets as targets_BO, in their own units."""
        labels = batch["labels"]
        return labels.reshape(labels.shape[0], -1).astype(jnp.float32)

    def example_batch(self):
        return {"inputs": np.zeros((1, *self.info.input_shape), self.info.input_dtype),
                "labels": np.zeros((1, len(self.mean_O)), np.float32)}

    def loss_fn(self, params, extra, batch, rng):
        preds_BO, extra = self.apply_train(params, extra, batch["inputs"], rng)
        error_BO = preds_BO.astype(jnp.float32) - (self.targets(batch) - self.mean_O) / self.std_O
        loss = jnp.mean(error_BO ** 2)
        return loss, ({"loss": jnp.mean((error_BO * self.std_O) ** 2)}, extra)

    def eval_outputs(self, params, extra, batch):
        preds_BO = self.model.apply({"params": params, **extra}, batch["inputs"], train=False)
        return {"preds": preds_BO.astype(jnp.float32) * self.std_O + self.mean_O,
                "targets": self.targets(batch)}

    def eval_metrics(self, outputs):
        return regression_metrics(outputs["preds"], outputs["targets"])
