"""DCGAN (Radford et al.): a transposed-conv generator and a strided-conv discriminator.

`generate(z_BZ, train) -> images_BYXC` in [0, 1] (sigmoid); `discriminate(x_BYXC, train) ->
logits_B`. Both halves are submodules, so parameters and batch statistics come as
{'generator': ..., 'discriminator': ...}. Batch norm normalises over the global batch (under jit
the mean is a cross-device reduction), so a step on 8 devices equals the step on one.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.layers import batch_norm, constrain_batch, conv, conv_transpose, dense
from fmjax.ranges import PositiveInt


class Generator(nn.Module):
    image_shape: Sequence[int]
    features: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z_BZ, train: bool):
        h, w, c = self.image_shape
        grid = (-(-h // 4), -(-w // 4), 2 * self.features)
        x = dense(math.prod(grid), (None, "mlp"), self.dtype, "project", use_bias=False)(z_BZ)
        x = constrain_batch(nn.relu(batch_norm(train, self.dtype, "bn_project")(x)))
        x = constrain_batch(x.reshape(-1, *grid))
        for i, (f, last) in enumerate([(self.features, False), (c, True)]):
            x = conv_transpose(f, (4, 4), (2, 2), self.dtype, use_bias=last, init_std=0.02,
                               name=f"deconv_{i}")(x)
            x = constrain_batch(nn.sigmoid(x) if last else
                                nn.relu(batch_norm(train, self.dtype, f"bn_{i}")(x)))
        return x[:, :h, :w].astype(jnp.float32)


class Discriminator(nn.Module):
    features: int = 64
    norm: str = "batch"           # batch | none (WGAN-GP's penalty is per example: no batch norm)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BYXC, train: bool):
        x = constrain_batch(nn.leaky_relu(conv(self.features, (4, 4), 2, "SAME", self.dtype,
                                               name="conv_0")(x_BYXC.astype(self.dtype)), 0.2))
        x = conv(2 * self.features, (4, 4), 2, "SAME", self.dtype, use_bias=self.norm == "none",
                 name="conv_1")(x)
        if self.norm == "batch":
            x = batch_norm(train, self.dtype, "bn_1")(x)
        x = constrain_batch(nn.leaky_relu(x, 0.2).reshape(x.shape[0], -1))
        return dense(1, ("embed", None), self.dtype, "logit")(x)[:, 0].astype(jnp.float32)


class DCGAN(nn.Module):
    image_shape: Sequence[int]
    latent_dim: PositiveInt = 100
    features: PositiveInt = 64
    discriminator_norm: str = "batch"
    dtype: Any = jnp.float32

    def setup(self):
        if self.discriminator_norm not in ("batch", "none"):
            from fmjax.errors import UserError
            raise UserError("config.model.discriminator_norm must be batch or none")
        self.generator = Generator(self.image_shape, self.features, self.dtype)
        self.discriminator = Discriminator(self.features, self.discriminator_norm, self.dtype)

    def generate(self, z_BZ, train: bool = False):
        return self.generator(z_BZ, train)

    def discriminate(self, x_BYXC, train: bool = False):
        return self.discriminator(x_BYXC, train)

    def __call__(self, z_BZ, train: bool = False):
        """For init: touches both halves."""
        return self.discriminate(self.generate(z_BZ, train), train)
