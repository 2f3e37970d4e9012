"""An LSTM (PyTorch's gate equations) unrolled with `lax.scan`, and its MNIST-1D classifier."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fmjax.models.gru import GRUClassifier, gate_params


class LSTM(nn.Module):
    """One direction of an LSTM layer: x_BTC -> h_BTF (all hidden states, in input time order).

    Gates i, f, g, o in PyTorch's order and initialisation (forget bias not raised), so weights
    load from `torch.nn.LSTM` as they are.
    """
    hidden_size: int
    reverse: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BTC):
        F = self.hidden_size
        w_i, w_h, b_i, b_h = gate_params(self, x_BTC.shape[-1], F, 4)
        # Input projections (and both biases) for every step at once; only h @ w_h is sequential.
        xi_TBG = jnp.einsum("btc,cg->tbg", x_BTC.astype(self.dtype), w_i) + (b_i + b_h)

        def step(carry, xi_BG):
            h_BF, c_BF = carry
            i, f, g, o = jnp.split(xi_BG + h_BF @ w_h, 4, axis=-1)
            c_BF = jax.nn.sigmoid(f) * c_BF + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_BF = jax.nn.sigmoid(o) * jnp.tanh(c_BF)
            return (h_BF, c_BF), h_BF

        zeros_BF = jnp.zeros((x_BTC.shape[0], F), self.dtype)
        _, h_TBF = jax.lax.scan(step, (zeros_BF, zeros_BF), xi_TBG, reverse=self.reverse)
        return h_TBF.transpose(1, 0, 2)


class LSTMClassifier(GRUClassifier):
    """(Bi)directional LSTM over a sequence, all hidden states flattened into a linear head.

    The GRU classifier's fields and defaults (hidden 6, bidirectional, 40 steps -> 480 features)
    with the LSTM's four gates in place of the GRU's three.
    """
    layer = LSTM
