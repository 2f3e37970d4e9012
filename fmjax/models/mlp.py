"""Logistic regression and the MLP (residual option, dropout) for flat inputs."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.layers import constrain_batch, dense
from fmjax.ranges import Fraction, NonNegativeInt, PositiveInt


class LogisticRegression(nn.Module):
    """One linear layer: x_BF -> logits_BL."""
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x_BF = constrain_batch(x.reshape(x.shape[0], -1).astype(self.dtype))
        return dense(self.num_classes, ("embed", "classes"), self.dtype, name="head")(x_BF)


class MLP(nn.Module):
    """`num_layers` hidden ReLU layers of `hidden_size`; with `residual`, h = h + relu(W h).

    The MNIST-1D paper's MLP is hidden_size=100, num_layers=2, residual=True.
    """
    num_classes: int
    hidden_size: PositiveInt = 100
    num_layers: NonNegativeInt = 2   # 0: logistic regression
    residual: bool = True
    dropout_rate: Fraction = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        h_BF = constrain_batch(x.reshape(x.shape[0], -1).astype(self.dtype))
        for i in range(self.num_layers):
            axes = ("embed", "mlp")
            update = nn.relu(dense(self.hidden_size, axes, self.dtype, name=f"hidden_{i}")(h_BF))
            update = nn.Dropout(self.dropout_rate, deterministic=not train)(update)
            h_BF = h_BF + update if (self.residual and i > 0) else update
        return dense(self.num_classes, ("mlp", "classes"), self.dtype, name="head")(h_BF)
