"""Logistic regression and the MLP (chosen widths and activation, residual option, dropout)."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.hidden import check_activation, check_model, hidden_stack, hidden_widths
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
    """Hidden layers then a linear head: x_BF -> logits_BL; with `residual`, h = h + act(W h).

    The layers are `num_layers` of `hidden_size`, or `hidden_sizes` when set (which then replaces
    both: `hidden_sizes=(2048, 1024)` is 784 -> 2048 -> 1024 -> 10 on MNIST). `residual` needs
    equal widths. The MNIST-1D paper's MLP is hidden_size=100, num_layers=2, residual=True, ReLU.
    """
    num_classes: int
    hidden_size: PositiveInt = 100
    num_layers: NonNegativeInt = 2   # 0: logistic regression
    hidden_sizes: Sequence[PositiveInt] = ()   # e.g. (2048, 1024); () = num_layers x hidden_size
    activation: str = "relu"         # relu | tanh | sigmoid | gelu | leaky_relu
    residual: bool = True
    dropout_rate: Fraction = 0.0
    dtype: Any = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        check_activation(self.activation)
        widths = self.widths()
        check_model((not self.residual or len(set(widths)) <= 1,
                     f"residual=True needs equal widths, not hidden_sizes={widths}; "
                     f"set residual=False"))

    def widths(self) -> tuple[int, ...]:
        """The hidden layers' widths, input side first."""
        return hidden_widths(self, (self.hidden_size,) * self.num_layers,
                             ("hidden_size", "num_layers"))

    @nn.compact
    def __call__(self, x, train: bool = False):
        h_BF = constrain_batch(x.reshape(x.shape[0], -1).astype(self.dtype))
        widths = self.widths()
        h_BF = hidden_stack(h_BF, widths, [f"hidden_{i}" for i in range(len(widths))],
                            self.activation, self.dropout_rate, train, self.dtype, self.residual)
        return dense(self.num_classes, ("mlp", "classes"), self.dtype, name="head")(h_BF)
