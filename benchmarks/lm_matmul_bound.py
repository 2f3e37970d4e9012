"""How fast the char GPT's training step could be on this CPU: its matmuls alone, through XLA.

One step of `gpt_char.py:cpu`'s shape (batch 12 x context 64, 4 layers, 128 wide, 4 heads, MLP
4x, tied 65-token head) reduced to its matmuls: the fused QKV, the two attention einsums, the
output projection, the MLP's two, the head; forward and both backward matmuls of each (3.96
GFLOP by XLA's cost analysis), with a ReLU where the model has a nonlinearity (so XLA cannot
reassociate the chain), one scalar rescaling per layer (values stay of size ~1, as layer norms keep them: no denormals) and a
tiny SGD update (so that steps depend on each other), 50 steps per call in a `lax.scan` as fmjax
trains. No layer norm, softmax, GELU, biases, loss or AdamW: the model through XLA's matmuls takes
at least this long, so tokens/s here bounds fmjax's (`benchmarks/lm.py` runs this too and reports
the ratio the bound allows against PyTorch).

    python benchmarks/lm_matmul_bound.py             # prints one JSON line
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python benchmarks/avx2_only.py -m lm_matmul_bound
"""

import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from fmjax import configs

STEPS_PER_CALL = 50
CALLS = 7
CONFIG = pathlib.Path(__file__).resolve().parent.parent / "experiments/shakespeare/gpt_char.py"
VOCAB = 65   # Tiny Shakespeare's characters


def cpu_shape():
    """(batch, context, width, heads, layers) of gpt_char.py:cpu, read from the experiment."""
    c = configs.load_experiment(f"{CONFIG}:cpu")
    return (c.train.batch_size, c.data.seq_len, c.model.embed_dim, c.model.num_heads,
            c.model.num_layers)


def matmuls(weights, x_MD, b, t, n):
    """The forward pass's matmuls; x_MD: M = b*t rows of width D."""
    d = x_MD.shape[1]
    for w_qkv, w_out, w_up, w_down in weights["layers"]:
        qkv_BTCNH = (x_MD @ w_qkv).reshape(b, t, 3, n, d // n)
        q, k, v = (qkv_BTCNH[:, :, i] for i in range(3))
        probs_BNTS = jax.nn.relu(jnp.einsum("btnh,bsnh->bnts", q, k))
        out_MD = jnp.einsum("bnts,bsnh->btnh", probs_BNTS, v).reshape(b * t, d)
        x_MD = jax.nn.relu(out_MD @ w_out @ w_up) @ w_down
        x_MD = x_MD * jax.lax.rsqrt(jnp.mean(x_MD * x_MD))   # size ~1 for the next layer
    return x_MD @ weights["embed"].T


def main():
    b, t, d, n, layers = cpu_shape()
    keys = iter(jax.random.split(jax.random.key(0), 4 * layers + 3))

    def normal(fan_in, *shape):   # activations of size ~1 at every layer, not denormals
        return jax.random.normal(next(keys), shape) / fan_in ** 0.5

    def qkv_weights():   # the scores' 1/sqrt(head size), and 1/sqrt(context) on the values
        scale = jnp.repeat(jnp.array([(d // n) ** -0.5, 1.0, t ** -0.5]), d)
        return normal(d, d, 3 * d) * scale

    weights = {"layers": [(qkv_weights(), normal(d, d, d), normal(d / 2, d, 4 * d),  # ReLU: x2
                           normal(4 * d, 4 * d, d)) for _ in range(layers)],
               "embed": normal(d, VOCAB, d)}
    x_MD, cotangent_MV = normal(1, b * t, d), normal(1, b * t, VOCAB)

    def loss(weights, x_MD):
        return jnp.vdot(matmuls(weights, x_MD, b, t, n), cotangent_MV)

    @jax.jit
    def call(weights, x_MD):
        def step(carry, _):
            weights, x_MD = carry
            grad_w, grad_x = jax.grad(loss, argnums=(0, 1))(weights, x_MD)
            # tiny steps: each step depends on the last, and the values stay where they were
            return (jax.tree.map(lambda w, g: w - 1e-6 * g, weights, grad_w),
                    x_MD - 1e-6 * grad_x), None
        return jax.lax.scan(step, (weights, x_MD), None, length=STEPS_PER_CALL)[0]

    state = jax.block_until_ready(call(weights, x_MD))   # compile
    seconds = []
    for _ in range(CALLS):
        start = time.perf_counter()
        state = jax.block_until_ready(call(*state))
        seconds.append((time.perf_counter() - start) / STEPS_PER_CALL)
    step_s = statistics.median(seconds)
    finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state))
    print(json.dumps({"ms_per_step": round(step_s * 1e3, 3),
                      "tokens_per_sec": round(b * t / step_s, 1), "finite": finite}))


if __name__ == "__main__":
    main()
