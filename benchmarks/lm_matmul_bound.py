"""How fast the char GPT's training step could be on this CPU: its matmuls alone, through XLA.

One step of `gpt_char.py:cpu`'s shape (batch 12 x context 64, 4 layers, 128 wide, 4 heads, MLP
4x, tied 65-token head) reduced to its matmuls: the fused QKV, the two attention einsums, the
output projection, the MLP's two, the head; forward and both backward matmuls of each (3.67
GFLOP), with a ReLU where the model has a nonlinearity (so XLA cannot reassociate the chain) and
an SGD update (so that steps depend on each other), 50 steps per call in a `lax.scan` as fmjax
trains. No layer norm, softmax, GELU, biases, loss or AdamW: any implementation of the model on
XLA takes at least this long, so tokens/s here bounds fmjax's (`benchmarks/lm.py`, which runs
this too and reports the ratio the bound allows against PyTorch).

    python benchmarks/lm_matmul_bound.py             # prints one JSON line
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python benchmarks/avx2_only.py -m lm_matmul_bound
"""

import importlib.util
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

STEPS_PER_CALL = 50
CALLS = 7
CONFIG = pathlib.Path(__file__).resolve().parent.parent / "experiments/shakespeare/gpt_char.py"
VOCAB = 65   # Tiny Shakespeare's characters


def cpu_shape():
    """(batch, context, width, heads, layers) of gpt_char.py:cpu, read from the experiment."""
    spec = importlib.util.spec_from_file_location("gpt_char", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(cpu=True)
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
    return x_MD @ weights["embed"].T


def main():
    b, t, d, n, layers = cpu_shape()
    keys = iter(jax.random.split(jax.random.key(0), 4 * layers + 3))

    def normal(*shape):
        return 0.02 * jax.random.normal(next(keys), shape)

    weights = {"layers": [(normal(d, 3 * d), normal(d, d), normal(d, 4 * d), normal(4 * d, d))
                          for _ in range(layers)],
               "embed": normal(VOCAB, d)}
    x_MD, cotangent_MV = normal(b * t, d), normal(b * t, VOCAB)

    def loss(weights, x_MD):
        return jnp.vdot(matmuls(weights, x_MD, b, t, n), cotangent_MV)

    @jax.jit
    def call(weights, x_MD):
        def step(carry, _):
            weights, x_MD = carry
            grad_w, grad_x = jax.grad(loss, argnums=(0, 1))(weights, x_MD)
            return (jax.tree.map(lambda w, g: w - 1e-3 * g, weights, grad_w), x_MD + grad_x), None
        return jax.lax.scan(step, (weights, x_MD), None, length=STEPS_PER_CALL)[0]

    state = jax.block_until_ready(call(weights, x_MD))   # compile
    seconds = []
    for _ in range(CALLS):
        start = time.perf_counter()
        state = jax.block_until_ready(call(*state))
        seconds.append((time.perf_counter() - start) / STEPS_PER_CALL)
    step_s = statistics.median(seconds)
    print(json.dumps({"ms_per_step": round(step_s * 1e3, 3),
                      "tokens_per_sec": round(b * t / step_s, 1)}))


if __name__ == "__main__":
    main()
