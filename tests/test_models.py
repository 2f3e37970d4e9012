"""Layers written for speed compute what the library layer they replace computes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.models.layers import Conv1D, gelu_exact
from fmjax.models.lstm import LSTM


def test_conv1d_equals_flax_conv_with_the_same_parameters():
    x_BLC = jax.random.normal(jax.random.key(0), (3, 40, 4))
    for kernel_size, stride, padding in [(5, 2, (1, 1)), (3, 1, (0, 2)), (4, 3, (2, 0))]:
        ours = Conv1D(6, kernel_size, stride, padding)
        reference = nn.Conv(6, (kernel_size,), stride, [padding])
        variables = nn.unbox(ours.init(jax.random.key(1), x_BLC))
        variables["params"]["bias"] = jax.random.normal(jax.random.key(2), (6,))
        np.testing.assert_allclose(ours.apply(variables, x_BLC),
                                   reference.apply(variables, x_BLC), rtol=1e-5, atol=1e-5)


def test_gelu_exact_equals_jax_gelu_exact_form():
    """The erf form the Transformers' MLPs use is jax.nn.gelu(approximate=False) to 1e-6 in value
    and gradient (the tanh approximation is over 1e-4 away), at float32 over [-10, 10]."""
    x = jnp.linspace(-10.0, 10.0, 20001, dtype=jnp.float32)
    def jax_exact(t):
        return jax.nn.gelu(t, approximate=False)
    np.testing.assert_allclose(gelu_exact(x), jax_exact(x), atol=1e-6, rtol=0)
    np.testing.assert_allclose(jax.vmap(jax.grad(gelu_exact))(x),
                               jax.vmap(jax.grad(jax_exact))(x), atol=1e-6, rtol=0)
    assert float(jnp.abs(gelu_exact(x) - jax.nn.gelu(x, approximate=True)).max()) > 1e-4
    x_bf16 = x.astype(jnp.bfloat16)   # computed wide, rounded once: the tail keeps its digits
    np.testing.assert_allclose(gelu_exact(x_bf16).astype(jnp.float32),
                               jax_exact(x_bf16.astype(jnp.float32)), rtol=1e-2, atol=1e-6)


def test_einsum_attention_equals_jax_dot_product_attention():
    """The CPU path (einsums) against jax.nn.dot_product_attention: causal, masked, and both."""
    from fmjax.models.transformer import attention, attention_mask
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 7, 3, 8)) for i in range(3))
    np.testing.assert_allclose(attention(q, k, v, causal=True),
                               jax.nn.dot_product_attention(q, k, v, is_causal=True),
                               rtol=1e-5, atol=1e-6)
    mask = jax.random.bernoulli(jax.random.key(3), 0.7, (2, 1, 7, 7)).at[..., 0].set(True)
    for causal in (False, True):
        np.testing.assert_allclose(attention(q, k, v, mask, causal),
                                   jax.nn.dot_product_attention(q, k, v, mask=mask,
                                                                is_causal=causal),
                                   rtol=1e-5, atol=1e-6)
    keys_BS = jnp.arange(7)[None] < jnp.array([[7], [4]])     # the second row has 3 pad keys
    np.testing.assert_array_equal(attention_mask(7, 7, True, keys_BS)[1, 0, 6],
                                  [True] * 4 + [False] * 3)


def test_lstm_equals_flax_lstm_cell_with_the_same_parameters():
    """Projections hoisted out of the scan and fused gates, against nn.RNN(nn.LSTMCell), both
    directions."""
    x_BTC = jax.random.normal(jax.random.key(0), (3, 9, 2))
    for reverse in (False, True):
        ours = LSTM(5, reverse=reverse)
        params = nn.unbox(ours.init(jax.random.key(1), x_BTC))["params"]
        w_i, w_h, b = (jnp.split(params[k], 4, axis=-1) for k in ("w_i", "w_h", "b_i"))
        b_h = jnp.split(params["b_h"], 4)
        cell = {f"i{gate}": {"kernel": w_i[n]} for n, gate in enumerate("ifgo")}
        cell |= {f"h{gate}": {"kernel": w_h[n], "bias": b[n] + b_h[n]}
                 for n, gate in enumerate("ifgo")}
        reference = nn.RNN(nn.LSTMCell(5), reverse=reverse, keep_order=True)
        np.testing.assert_allclose(ours.apply({"params": params}, x_BTC),
                                   reference.apply({"params": {"cell": cell}}, x_BTC),
                                   rtol=1e-5, atol=1e-6)


def test_fused_kernel_is_cudnn_only_where_cudnn_takes_the_inputs():
    """cuDNN on an NVIDIA GPU of compute capability >= 8.0 for unmasked bf16/fp16 attention with a
    head dim a multiple of 8 up to 128 (256 on Hopper); XLA for everything else."""
    from types import SimpleNamespace

    from fmjax.models.transformer import fused_kernel
    hopper, ampere, turing = (SimpleNamespace(platform="gpu", compute_capability=c)
                              for c in ("9.0", "8.0", "7.5"))
    rocm = SimpleNamespace(platform="gpu", compute_capability="gfx942")
    bf16, fp16, fp32 = jnp.bfloat16, jnp.float16, jnp.float32
    assert fused_kernel(bf16, 64, False, hopper) == "cudnn"
    assert fused_kernel(fp16, 128, False, ampere) == "cudnn"
    assert fused_kernel(bf16, 256, False, hopper) == "cudnn"
    for args in [(bf16, 256, False, ampere), (bf16, 264, False, hopper), (bf16, 60, False, hopper),
                 (fp32, 64, False, hopper), (bf16, 64, True, hopper), (bf16, 64, False, turing),
                 (bf16, 64, False, rocm), (bf16, 64, False, jax.devices("cpu")[0])]:
        assert fused_kernel(*args) == "xla", args


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_cudnn_attention_equals_xla_in_value_and_gradient():
    """GPT-2 small's attention shape in bf16: the cuDNN kernel against XLA's, causal and not."""
    from fmjax.models.transformer import attention, fused_kernel
    assert fused_kernel(jnp.bfloat16, 64, False) == "cudnn"
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 256, 12, 64), jnp.bfloat16)
               for i in range(3))
    fused = jax.jit(lambda q, k, v: attention(q, k, v, causal=True, implementation="fused"))
    assert "__cudnn$fmha" in fused.lower(q, k, v).as_text()   # no silent fallback to XLA
    for causal in (False, True):
        def loss(q, k, v, impl):
            if impl == "xla":
                out = jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                                   implementation="xla")
            else:
                out = attention(q, k, v, causal=causal, implementation="fused")
            return jnp.sum(out.astype(jnp.float32) ** 2)
        (cudnn, grads), (xla, ref_grads) = (
            jax.jit(jax.value_and_grad(loss, (0, 1, 2)), static_argnums=3)(q, k, v, impl)
            for impl in ("cudnn", "xla"))
        np.testing.assert_allclose(cudnn, xla, rtol=2e-2)
        for g, ref in zip(grads, ref_grads):
            np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(ref, np.float32),
                                       rtol=5e-2, atol=5e-2)
