"""Convolutional classifiers: the MNIST-1D paper's 1D CNN and a small 2D CNN for images."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.layers import Conv1D, constrain_batch, conv, dense
from fmjax.ranges import Fraction, NonNegativeInt, PositiveInt


class CNN1D(nn.Module):
    """Strided 1D convolutions + a linear head: x_BT -> logits_BL.

    Defaults are the MNIST-1D paper's ConvBase: 25 channels, kernels (5, 3, 3), stride 2,
    padding 1, ReLU; 40 -> 19 -> 10 -> 5 positions, then 125 features into the head.
    """
    num_classes: int
    features: PositiveInt = 25
    kernel_sizes: Sequence[PositiveInt] = (5, 3, 3)
    stride: PositiveInt = 2
    padding: NonNegativeInt = 1
    dropout_rate: Fraction = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        h_BTC = x.reshape(x.shape[0], x.shape[1], -1).astype(self.dtype)
        for i, k in enumerate(self.kernel_sizes):
            h_BTC = Conv1D(self.features, k, self.stride, (self.padding, self.padding),
                           self.dtype, name=f"conv_{i}")(h_BTC)
            h_BTC = constrain_batch(nn.relu(h_BTC))
        h_BF = h_BTC.reshape(h_BTC.shape[0], -1)
        h_BF = nn.Dropout(self.dropout_rate, deterministic=not train)(h_BF)
        return dense(self.num_classes, ("embed", "classes"), self.dtype, name="head")(h_BF)


class CNN2D(nn.Module):
    """Conv-ReLU-maxpool blocks, a hidden dense layer and dropout: x_BYXC -> logits_BL."""
    num_classes: int
    features: Sequence[PositiveInt] = (32, 64)
    hidden_size: PositiveInt = 256
    dropout_rate: Fraction = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x.astype(self.dtype)
        for i, f in enumerate(self.features):
            h = nn.relu(conv(f, (3, 3), dtype=self.dtype, name=f"conv_{i}")(h))
            h = constrain_batch(nn.max_pool(h, (2, 2), strides=(2, 2), padding="SAME"))
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(dense(self.hidden_size, ("embed", "mlp"), self.dtype, name="hidden")(h))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return dense(self.num_classes, ("mlp", "classes"), self.dtype, name="head")(h)
