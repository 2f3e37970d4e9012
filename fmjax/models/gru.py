"""A GRU (PyTorch's gate equations) unrolled with `lax.scan`, and the MNIST-1D GRU classifier."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fmjax.models.layers import dense, partitioned
from fmjax.ranges import PositiveInt


def _symmetric_uniform(limit: float):
    """U(-limit, limit): PyTorch's GRU initialisation with limit = 1/sqrt(hidden_size)."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -limit, limit)
    return init


class GRU(nn.Module):
    """One direction of a GRU layer: x_BTF -> h_BTH (all hidden states, in input time order)."""
    hidden_size: int
    reverse: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BTF):
        H, F = self.hidden_size, x_BTF.shape[-1]
        init = _symmetric_uniform(H ** -0.5)
        w_i = self.param("w_i", partitioned(init, ("embed", "mlp")), (F, 3 * H))
        w_h = self.param("w_h", partitioned(init, (None, "mlp")), (H, 3 * H))
        b_i = self.param("b_i", partitioned(init, ("mlp",)), (3 * H,))
        b_h = self.param("b_h", partitioned(init, ("mlp",)), (3 * H,))
        w_i, w_h, b_i, b_h = (p.astype(self.dtype) for p in (w_i, w_h, b_i, b_h))
        # Input projections for every step at once; only the recurrence is sequential.
        xi_TBG = jnp.einsum("btf,fg->tbg", x_BTF.astype(self.dtype), w_i) + b_i

        def step(h_BH, xi_BG):
            hh_BG = h_BH @ w_h + b_h
            xr, xz, xn = jnp.split(xi_BG, 3, axis=-1)
            hr, hz, hn = jnp.split(hh_BG, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            h_BH = (1.0 - z) * n + z * h_BH
            return h_BH, h_BH

        h0_BH = jnp.zeros((x_BTF.shape[0], H), self.dtype)
        _, h_TBH = jax.lax.scan(step, h0_BH, xi_TBG, reverse=self.reverse)
        return h_TBH.transpose(1, 0, 2)


class GRUClassifier(nn.Module):
    """(Bi)directional GRU over a sequence, all hidden states flattened into a linear head.

    Defaults are the MNIST-1D paper's GRUBase: hidden 6, bidirectional, 40 steps -> 480 features.
    """
    num_classes: int
    hidden_size: PositiveInt = 6
    bidirectional: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x_BTF = x.reshape(x.shape[0], x.shape[1], -1)
        h_BTH = GRU(self.hidden_size, dtype=self.dtype, name="forward")(x_BTF)
        if self.bidirectional:
            back_BTH = GRU(self.hidden_size, reverse=True, dtype=self.dtype, name="backward")(x_BTF)
            h_BTH = jnp.concatenate([h_BTH, back_BTH], axis=-1)
        h_BF = h_BTH.reshape(h_BTH.shape[0], -1)
        return dense(self.num_classes, ("embed", "classes"), self.dtype, name="head")(h_BF)
