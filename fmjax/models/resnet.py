"""A small pre-activation-free ResNet (He et al. 2016, CIFAR variant) for images x_BYXC."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fmjax.errors import UserError
from fmjax.models.layers import batch_norm, constrain_batch, conv, dense
from fmjax.ranges import PositiveInt


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (projected when the shape changes) shortcut, then ReLU."""
    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = conv(self.features, (3, 3), self.strides, dtype=self.dtype, use_bias=False)(x)
        y = nn.relu(batch_norm(train, self.dtype)(y))
        y = conv(self.features, (3, 3), dtype=self.dtype, use_bias=False)(y)
        y = batch_norm(train, self.dtype)(y)
        if x.shape != y.shape:
            x = conv(self.features, (1, 1), self.strides, dtype=self.dtype, use_bias=False,
                     name="shortcut")(x)
            x = batch_norm(train, self.dtype, name="shortcut_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """Stem conv, stages of residual blocks (stride 2 between stages), global average pool."""
    num_classes: int
    stage_sizes: Sequence[PositiveInt] = (2, 2, 2)
    features: Sequence[PositiveInt] = (16, 32, 64)
    dtype: Any = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        if not self.stage_sizes or len(self.stage_sizes) != len(self.features):
            raise UserError(f"config.model.stage_sizes={tuple(self.stage_sizes)} and features="
                            f"{tuple(self.features)} need one entry per stage, the same number")

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = conv(self.features[0], (3, 3), dtype=self.dtype, use_bias=False, name="stem")(
            x.astype(self.dtype))
        h = nn.relu(batch_norm(train, self.dtype, name="stem_bn")(h))
        for stage, (blocks, features) in enumerate(zip(self.stage_sizes, self.features)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                h = ResidualBlock(features, strides, self.dtype)(h, train)
            h = constrain_batch(h)
        h = h.mean(axis=(1, 2))
        return dense(self.num_classes, ("mlp", "classes"), self.dtype, name="head")(h)
