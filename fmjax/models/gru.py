"""A GRU (PyTorch's gate equations) unrolled with `lax.scan`, and the MNIST-1D GRU classifier."""

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from fmjax.models.layers import dense, partitioned
from fmjax.ranges import PositiveInt


def symmetric_uniform(limit: float):
    """U(-limit, limit): PyTorch's GRU and LSTM initialisation with limit = 1/sqrt(hidden_size)."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -limit, limit)
    return init


def gate_params(module: nn.Module, C: int, F: int, gates: int) -> tuple:
    """(w_i [C, gates F], w_h [F, gates F], b_i, b_h) of a recurrent layer, PyTorch's
    U(+-1/sqrt(F)) init, in the module's compute dtype (Qwix sees them as weights)."""
    init = symmetric_uniform(F ** -0.5)
    w_i = module.param("w_i", partitioned(init, ("embed", "mlp")), (C, gates * F))
    w_h = module.param("w_h", partitioned(init, (None, "mlp")), (F, gates * F))
    b_i = module.param("b_i", partitioned(init, ("mlp",)), (gates * F,))
    b_h = module.param("b_h", partitioned(init, ("mlp",)), (gates * F,))
    return nn.dtypes.promote_dtype(w_i, w_h, b_i, b_h, dtype=module.dtype)


class GRU(nn.Module):
    """One direction of a GRU layer: x_BTC -> h_BTF (all hidden states, in input time order)."""
    hidden_size: int
    reverse: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BTC):
        F = self.hidden_size
        w_i, w_h, b_i, b_h = gate_params(self, x_BTC.shape[-1], F, 3)
        # Input projections for every step at once; only the recurrence is sequential.
        xi_TBG = jnp.einsum("btc,cg->tbg", x_BTC.astype(self.dtype), w_i) + b_i

        def step(h_BF, xi_BG):
            hh_BG = h_BF @ w_h + b_h
            xr, xz, xn = jnp.split(xi_BG, 3, axis=-1)
            hr, hz, hn = jnp.split(hh_BG, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            h_BF = (1.0 - z) * n + z * h_BF
            return h_BF, h_BF

        h0_BF = jnp.zeros((x_BTC.shape[0], F), self.dtype)
        _, h_TBF = jax.lax.scan(step, h0_BF, xi_TBG, reverse=self.reverse)
        return h_TBF.transpose(1, 0, 2)


class GRUClassifier(nn.Module):
    """(Bi)directional GRU over a sequence, all hidden states flattened into a linear head.

    Defaults are the MNIST-1D paper's GRUBase: hidden 6, bidirectional, 40 steps -> 480 features.
    Subclasses swap the recurrent `layer` (fmjax/models/lstm.py).
    """
    layer: ClassVar[type[nn.Module]] = GRU
    num_classes: int
    hidden_size: PositiveInt = 6
    bidirectional: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x_BTC = x.reshape(x.shape[0], x.shape[1], -1)
        h_BTF = self.layer(self.hidden_size, dtype=self.dtype, name="forward")(x_BTC)
        if self.bidirectional:
            back_BTF = self.layer(self.hidden_size, reverse=True, dtype=self.dtype,
                                  name="backward")(x_BTC)
            h_BTF = jnp.concatenate([h_BTF, back_BTF], axis=-1)
        flat = h_BTF.reshape(h_BTF.shape[0], -1)   # [B, T * F] (T * 2F when bidirectional)
        return dense(self.num_classes, ("embed", "classes"), self.dtype, name="head")(flat)
