"""Convolutional classifiers: the MNIST-1D paper's 1D CNN and a small 2D CNN for images."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.hidden import check_activation, hidden_stack, hidden_widths
from fmjax.models.layers import Conv1D, constrain_batch, conv, dense
from fmjax.ranges import Fraction, NonNegativeInt, PositiveInt


class CNN1D(nn.Module):
    """Strided 1D convolutions + a linear head: x_BT -> logits_BL.

    Defaults are the MNIST-1D paper's ConvBase: 25 channels, kernels (5, 3, 3), stride 2,
    padding 1, ReLU; 40 -> 19 -> 10 -> 5 positions, then 125 features into the head. Optional
    hidden dense layers of `hidden_sizes` with `activation` before the head (the convolutions
    stay ReLU).
    """
    num_classes: int
    features: PositiveInt = 25
    kernel_sizes: Sequence[PositiveInt] = (5, 3, 3)
    stride: PositiveInt = 2
    padding: NonNegativeInt = 1
    hidden_sizes: Sequence[PositiveInt] = ()   # () = a linear head on the conv features
    activation: str = "relu"         # hidden layers: relu | tanh | sigmoid | gelu | leaky_relu
    dropout_rate: Fraction = 0.0
    dtype: Any = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        check_activation(self.activation)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h_BTC = x.reshape(x.shape[0], x.shape[1], -1).astype(self.dtype)
        for i, k in enumerate(self.kernel_sizes):
            h_BTC = Conv1D(self.features, k, self.stride, (self.padding, self.padding),
                           self.dtype, name=f"conv_{i}")(h_BTC)
            h_BTC = constrain_batch(nn.relu(h_BTC))
        h_BF = h_BTC.reshape(h_BTC.shape[0], -1)
        h_BF = nn.Dropout(self.dropout_rate, deterministic=not train)(h_BF)
        h_BF = hidden_stack(h_BF, self.hidden_sizes,
                            [f"hidden_{i}" for i in range(len(self.hidden_sizes))],
                            self.activation, self.dropout_rate, train, self.dtype)
        axes = ("mlp", "classes") if self.hidden_sizes else ("embed", "classes")
        return dense(self.num_classes, axes, self.dtype, name="head")(h_BF)


class CNN2D(nn.Module):
    """Conv-ReLU-maxpool blocks, hidden dense layers and dropout: x_BYXC -> logits_BL.

    The head has one hidden layer of `hidden_size`, or `hidden_sizes` when set (which replaces
    it), with `activation` (the convolutions stay ReLU).
    """
    num_classes: int
    features: Sequence[PositiveInt] = (32, 64)
    hidden_size: PositiveInt = 256
    hidden_sizes: Sequence[PositiveInt] = ()   # e.g. (512, 128); () = (hidden_size,)
    activation: str = "relu"         # hidden layers: relu | tanh | sigmoid | gelu | leaky_relu
    dropout_rate: Fraction = 0.0
    dtype: Any = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        check_activation(self.activation)
        self.widths()

    def widths(self) -> tuple[int, ...]:
        """The head's hidden widths, input side first."""
        return hidden_widths(self, (self.hidden_size,), ("hidden_size",))

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x.astype(self.dtype)
        for i, f in enumerate(self.features):
            h = nn.relu(conv(f, (3, 3), dtype=self.dtype, name=f"conv_{i}")(h))
            h = constrain_batch(nn.max_pool(h, (2, 2), strides=(2, 2), padding="SAME"))
        h = h.reshape(h.shape[0], -1)
        widths = self.widths()   # the first layer keeps its name from before `hidden_sizes`
        names = ["hidden"] + [f"hidden_{i}" for i in range(1, len(widths))]
        h = hidden_stack(h, widths, names, self.activation, self.dropout_rate, train, self.dtype)
        return dense(self.num_classes, ("mlp", "classes"), self.dtype, name="head")(h)
