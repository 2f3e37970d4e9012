"""Variational autoencoder (Kingma & Welling) for images with Bernoulli pixels.

`encode(x_BYXC) -> (mean_BZ, logvar_BZ)` of q(z|x); `decode(z_BZ) -> logits_BYXC` of p(x|z);
the prior is N(0, I). The encoder and decoder are MLPs (the flax example's 500 hidden units) or
small strided conv nets with transposed convs in the decoder.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.layers import conv, conv_transpose, dense
from fmjax.ranges import PositiveInt


class VAE(nn.Module):
    image_shape: Sequence[int]          # (H, W, C), from the dataset
    latent_dim: PositiveInt = 20
    hidden_size: PositiveInt = 500
    network: str = "mlp"                # mlp | conv
    conv_features: Sequence[PositiveInt] = (32, 64)
    dtype: Any = jnp.float32

    def setup(self):
        if self.network not in ("mlp", "conv"):
            from fmjax.errors import UserError
            raise UserError(f"config.model.network must be mlp or conv, got '{self.network}'")
        h, w, c = self.image_shape
        if self.network == "conv":
            self.enc_convs = [conv(f, (3, 3), 2, "SAME", self.dtype, name=f"enc_conv_{i}")
                              for i, f in enumerate(self.conv_features)]
            scale = 2 ** len(self.conv_features)
            self.dec_grid = (-(-h // scale), -(-w // scale), self.conv_features[-1])
            self.dec_convs = [conv_transpose(f, (3, 3), (2, 2), self.dtype, name=f"dec_conv_{i}")
                              for i, f in enumerate([*self.conv_features[-2::-1], c])]
            self.dec_in = dense(math.prod(self.dec_grid), ("mlp", "embed"),
                                self.dtype, "dec_in")
        else:
            self.dec_out = dense(h * w * c, ("mlp", "embed"), self.dtype, "dec_out")
        self.enc_hidden = dense(self.hidden_size, ("embed", "mlp"), self.dtype, "enc_hidden")
        self.enc_mean = dense(self.latent_dim, ("mlp", None), self.dtype, "enc_mean")
        self.enc_logvar = dense(self.latent_dim, ("mlp", None), self.dtype, "enc_logvar")
        self.dec_hidden = dense(self.hidden_size, (None, "mlp"), self.dtype, "dec_hidden")

    def encode(self, x_BYXC):
        h = x_BYXC.astype(self.dtype)
        if self.network == "conv":
            for layer in self.enc_convs:
                h = nn.relu(layer(h))
        h = nn.relu(self.enc_hidden(h.reshape(h.shape[0], -1)))
        return (self.enc_mean(h).astype(jnp.float32), self.enc_logvar(h).astype(jnp.float32))

    def decode(self, z_BZ):
        h = nn.relu(self.dec_hidden(z_BZ.astype(self.dtype)))
        height, width, channels = self.image_shape
        if self.network == "mlp":
            logits = self.dec_out(h)
            return logits.reshape(-1, height, width, channels).astype(jnp.float32)
        h = nn.relu(self.dec_in(h)).reshape(-1, *self.dec_grid)
        for i, layer in enumerate(self.dec_convs):
            h = layer(h)
            if i < len(self.dec_convs) - 1:
                h = nn.relu(h)
        return h[:, :height, :width].astype(jnp.float32)

    def __call__(self, x_BYXC, noise_BZ):
        """Reconstruction logits for z = mean + sigma * noise, and q(z|x)'s parameters."""
        mean_BZ, logvar_BZ = self.encode(x_BYXC)
        z_BZ = mean_BZ + jnp.exp(0.5 * logvar_BZ) * noise_BZ
        return self.decode(z_BZ), mean_BZ, logvar_BZ
