"""Transformer layers shared by every family that attends: pre-LN blocks, attention with an
optional KV cache, GELU or SwiGLU MLPs, learned or rotary positions.

Shapes: B batch, T query length, S key length, D embed, N heads, H head dim, F MLP width.
Parameters carry logical axes ('embed', 'heads', 'kv', 'mlp', 'vocab'); activations are
constrained to their own names (`BTD_AXES`, ...), so one rules table (`fmjax.sharding.RULES`)
decides data, FSDP and tensor (Megatron: heads and MLP columns split, their outputs summed)
parallelism.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fmjax.errors import UserError
from fmjax.models.layers import gelu_exact, partitioned

Dtype = Any
REMAT_POLICIES = {
    "none": None,                                                   # keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,               # recompute the whole block
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def check_config(model, *checks: tuple[bool, str]) -> None:
    """UserError for the first problem in a Transformer model's fields: heads that do not divide
    the width, an unknown remat policy, or one of the model's own `checks` (ok, problem)."""
    shared = [(model.embed_dim % model.num_heads == 0,
               f"embed_dim={model.embed_dim} is not divisible by num_heads={model.num_heads}"),
              (model.remat in REMAT_POLICIES, f"remat: {' | '.join(REMAT_POLICIES)}")]
    for ok, problem in [*shared, *checks]:
        if not ok:
            raise UserError(f"config.model: {problem}")


# Logical axes of activations, named by their shape letters; fmjax/sharding.py places them.
BTD_AXES = ("activation_batch", "activation_length", "activation_embed")
BTNH_AXES = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
BTF_AXES = ("activation_batch", "activation_length", "activation_mlp")
BTV_AXES = ("activation_batch", "activation_length", "activation_vocab")


def constrain(x, axes: tuple[str, ...]):
    """Pin an activation's sharding (under the rules that the train and eval steps bind)."""
    return nn.with_logical_constraint(x, axes)


def layer_norm(dtype: Dtype, name: str | None = None, use_bias: bool = True) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name, use_bias=use_bias,
                        scale_init=partitioned(nn.initializers.ones_init(), ("embed",)),
                        bias_init=partitioned(nn.initializers.zeros_init(), ("embed",)))


def rotary(x_BTNH, positions_BT, base: float = 10000.0):
    """Rotary position embedding (Su et al.): rotate feature pairs (i, i + H/2) by position."""
    half = x_BTNH.shape[-1] // 2
    inv_freq_J = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_BTJ = positions_BT[..., None].astype(jnp.float32) * inv_freq_J
    sin, cos = jnp.sin(angle_BTJ)[:, :, None], jnp.cos(angle_BTJ)[:, :, None]
    x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BTNH.dtype)


def attention_mask(t: int, s: int, causal: bool, key_mask_BS=None):
    """[B or 1, 1, T, S] bool (True = may attend): causal and/or padded keys masked; None if
    neither applies."""
    mask_B1TS = jnp.tril(jnp.ones((t, s), bool))[None, None] if causal else None
    if key_mask_BS is not None:
        keys_B1TS = key_mask_BS[:, None, None, :]
        mask_B1TS = keys_B1TS if mask_B1TS is None else mask_B1TS & keys_B1TS
    return mask_B1TS


def attention_probs(q_BTNH, k_BSNH, mask_B1TS=None):
    """softmax(q k^T / sqrt(H)) over the keys, float32 [B, N, T, S]; masked keys get 0."""
    scale = 1.0 / math.sqrt(q_BTNH.shape[-1])
    logits_BNTS = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BSNH).astype(jnp.float32) * scale
    if mask_B1TS is not None:
        logits_BNTS = jnp.where(mask_B1TS, logits_BNTS, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(logits_BNTS, axis=-1)


def einsum_attention(q_BTNH, k_BSNH, v_BSNH, mask_B1TS=None):
    """softmax(q k^T / sqrt(H)) v as two einsums: what `jax.nn.dot_product_attention` computes."""
    return _weighted_values(attention_probs(q_BTNH, k_BSNH, mask_B1TS), v_BSNH)


def _weighted_values(probs_BNTS, v_BSNH):
    return jnp.einsum("bnts,bsnh->btnh", probs_BNTS.astype(v_BSNH.dtype), v_BSNH)


def _with_causal(mask_B1TS, t: int, s: int, causal: bool):
    if not causal:
        return mask_B1TS
    causal_11TS = attention_mask(t, s, True)
    return causal_11TS if mask_B1TS is None else mask_B1TS & causal_11TS


IMPLEMENTATIONS = ("einsum", "fused")


def default_implementation() -> str:
    """'einsum' on CPUs (no fused kernel there, and the einsums are faster), else 'fused'."""
    return "einsum" if jax.default_backend() == "cpu" else "fused"


def fused_kernel(dtype, head_dim: int, masked: bool, device=None) -> str:
    """`jax.nn.dot_product_attention`'s `implementation` for these inputs: "cudnn" (flash
    attention: the T x S logits never reach memory, and causal attention skips the masked half)
    where cuDNN takes them, else "xla". cuDNN's limits (jax/_src/cudnn/fused_attention_stablehlo.py
    `check_layout`, `check_is_flash_attention`): an NVIDIA GPU of compute capability >= 8.0, fp16
    or bf16, head dim a multiple of 8 up to 128 (256 from Hopper, 9.0, on). A boolean mask (padded
    keys, the KV cache) stays on XLA: cuDNN would take it as a materialised bias."""
    device = device or jax.devices()[0]
    try:
        capability = float(getattr(device, "compute_capability", ""))   # ROCm: "gfx90a"
    except ValueError:
        return "xla"
    max_head_dim = 256 if capability >= 9.0 else 128
    fits = (device.platform == "gpu" and capability >= 8.0 and not masked
            and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
            and head_dim % 8 == 0 and head_dim <= max_head_dim)
    return "cudnn" if fits else "xla"


def _fused_attention(q_BTNH, k_BSNH, v_BSNH, mask_B1TS, causal: bool):
    """cuDNN's kernel where `fused_kernel` picks it, else XLA's; a refusal that JAX raises while
    tracing (a cuDNN version or shape the check above does not know) falls back to XLA."""
    kernel = fused_kernel(q_BTNH.dtype, q_BTNH.shape[-1], mask_B1TS is not None)
    if kernel == "cudnn":
        try:
            return jax.nn.dot_product_attention(q_BTNH, k_BSNH, v_BSNH, is_causal=causal,
                                                implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError):
            pass
    return jax.nn.dot_product_attention(q_BTNH, k_BSNH, v_BSNH, mask=mask_B1TS,
                                        is_causal=causal, implementation="xla")


def attention(q_BTNH, k_BSNH, v_BSNH, mask_B1TS=None, causal: bool = False,
              implementation: str | None = None, with_probs: bool = False):
    """`jax.nn.dot_product_attention`, through cuDNN's fused kernel where it applies
    (`fused_kernel`: a GPU, bf16). CPUs have no fused kernel, and there the plain einsums are
    faster (the :cpu char GPT trains 10% faster: benchmarks/RESULTS.md); tests/test_models.py and
    tests/test_lm.py check the paths agree. `mask_B1TS` (True = attend) and `causal` combine.
    `implementation` (einsum | fused; None: `default_implementation()`) lets tests take either
    branch. With `with_probs` -> (out_BTNH, probs_BNTS float32): the einsum path returns the
    weights it used; the fused kernel keeps its own, so they are recomputed, at a cost paid only
    by whoever asks (attention maps)."""
    implementation = implementation or default_implementation()
    t, s = q_BTNH.shape[1], k_BSNH.shape[1]
    if implementation == "einsum":
        probs_BNTS = attention_probs(q_BTNH, k_BSNH, _with_causal(mask_B1TS, t, s, causal))
        out_BTNH = _weighted_values(probs_BNTS, v_BSNH)
    elif implementation == "fused":
        out_BTNH = _fused_attention(q_BTNH, k_BSNH, v_BSNH, mask_B1TS, causal)
        probs_BNTS = (attention_probs(q_BTNH, k_BSNH, _with_causal(mask_B1TS, t, s, causal))
                      if with_probs else None)
    else:
        raise ValueError(f"attention implementation: {' | '.join(IMPLEMENTATIONS)}")
    return (out_BTNH, probs_BNTS) if with_probs else out_BTNH


class Attention(nn.Module):
    """Multi-head attention through `attention` (`jax.nn.dot_product_attention`, fused where the
    backend has a kernel). Self-attention by default; given `kv_BSD` (an encoder's output) it is
    cross-attention: queries from `x_BTD`, keys and values from `kv_BSD`. `key_mask_BS` marks
    real (not padding) keys. With `decode`, self-attention keys and values are appended to a
    'cache' collection of length `max_len`, so a prompt can be fed at once and then one token per
    call. When the 'intermediates' collection is mutable (attention maps:
    `apply(..., mutable=["intermediates"])`), the weights `probs_BNTS` (float32) are sown there as
    'attention_weights'; otherwise nothing more is computed."""
    num_heads: int
    head_dim: int
    max_len: int
    causal: bool = True
    use_rotary: bool = False
    use_bias: bool = True
    init_std: float = 0.02
    out_init_std: float = 0.02
    dtype: Dtype = jnp.float32

    def _param(self, name, shape, axes, init):
        value = self.param(name, partitioned(init, axes), shape)
        return jnp.asarray(value, self.dtype)

    def _project_in(self, name: str, x_BTD):
        shape = (x_BTD.shape[-1], self.num_heads, self.head_dim)
        kernel_DNH = self._param(f"{name}_kernel", shape, ("embed", "heads", "kv"),
                                 nn.initializers.normal(self.init_std))
        y_BTNH = jnp.einsum("btd,dnh->btnh", x_BTD.astype(self.dtype), kernel_DNH)
        if self.use_bias:
            y_BTNH = y_BTNH + self._param(f"{name}_bias", shape[1:], ("heads", "kv"),
                                          nn.initializers.zeros_init())
        return constrain(y_BTNH, BTNH_AXES)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, decode: bool = False, key_mask_BS=None,
                 kv_BSD=None):
        cross = kv_BSD is not None
        q_BTNH = self._project_in("query", x_BTD)
        k_BSNH, v_BSNH = (self._project_in(n, kv_BSD if cross else x_BTD)
                          for n in ("key", "value"))
        if self.use_rotary and not cross:
            q_BTNH, k_BSNH = rotary(q_BTNH, positions_BT), rotary(k_BSNH, positions_BT)
        mask_B1TS = attention_mask(x_BTD.shape[1], k_BSNH.shape[1], False, key_mask_BS)
        causal = self.causal and not cross
        if decode and not cross:
            k_BSNH, v_BSNH, mask_B1TS = self._update_cache(k_BSNH, v_BSNH, positions_BT)
            causal = False   # the cache mask hides future keys
        capture = self.is_mutable_collection("intermediates")
        out = attention(q_BTNH, k_BSNH, v_BSNH, mask_B1TS, causal, with_probs=capture)
        if capture:
            out, probs_BNTS = out
            self.sow("intermediates", "attention_weights", probs_BNTS)
        out_BTNH = constrain(out, BTNH_AXES)
        d = x_BTD.shape[-1]
        kernel_NHD = self._param("out_kernel", (self.num_heads, self.head_dim, d),
                                 ("heads", "kv", "embed"), nn.initializers.normal(self.out_init_std))
        y_BTD = jnp.einsum("btnh,nhd->btd", out_BTNH, kernel_NHD)
        if self.use_bias:
            y_BTD = y_BTD + self._param("out_bias", (d,), ("embed",), nn.initializers.zeros_init())
        return y_BTD

    def _update_cache(self, k_BTNH, v_BTNH, positions_BT):
        """Write this chunk's keys/values at its positions; mask keys not yet written or in the
        future (key position > query position)."""
        b, t, n, h = k_BTNH.shape
        shape = (b, self.max_len, n, h)
        cached_k = self.variable("cache", "key", jnp.zeros, shape, k_BTNH.dtype)
        cached_v = self.variable("cache", "value", jnp.zeros, shape, v_BTNH.dtype)
        start = positions_BT[0, 0]
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BTNH, (0, start, 0, 0))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BTNH, (0, start, 0, 0))
        mask_B1TS = (jnp.arange(self.max_len)[None, :] <= positions_BT[:, :, None])[:, None]
        return cached_k.value, cached_v.value, mask_B1TS


class MLP(nn.Module):
    """x_BTD -> D: GELU (`Dense(F) -> gelu -> Dense(D)`) or SwiGLU (`silu(xW) * xV -> Dense(D)`)."""
    hidden_size: int
    activation: str = "gelu"          # gelu | swiglu
    use_bias: bool = True
    init_std: float = 0.02
    out_init_std: float = 0.02
    dtype: Dtype = jnp.float32

    def _dense(self, features, axes, std, name):
        return nn.Dense(features, dtype=self.dtype, use_bias=self.use_bias, name=name,
                        kernel_init=partitioned(nn.initializers.normal(std), axes),
                        bias_init=partitioned(nn.initializers.zeros_init(), axes[1:]))

    @nn.compact
    def __call__(self, x_BTD):
        up = self._dense(self.hidden_size, ("embed", "mlp"), self.init_std, "up")
        if self.activation == "swiglu":
            gate = self._dense(self.hidden_size, ("embed", "mlp"), self.init_std, "gate")
            h_BTF = nn.silu(gate(x_BTD)) * up(x_BTD)
        else:
            h_BTF = gelu_exact(up(x_BTD))
        h_BTF = constrain(h_BTF, BTF_AXES)
        return self._dense(x_BTD.shape[-1], ("mlp", "embed"), self.out_init_std, "down")(h_BTF)


class Block(nn.Module):
    """Pre-LN Transformer block: x + drop(attn(LN(x))), [x + drop(cross_attn(LN(x), memory)),]
    then x + drop(mlp(LN(x))). `mask_BS` marks real tokens of x (for bidirectional attention over
    padded inputs); `memory_BSD` with `memory_mask_BS` is the encoder output a decoder block
    (`cross_attention=True`) attends to."""
    num_heads: int
    head_dim: int
    mlp_size: int
    max_len: int
    causal: bool = True
    use_rotary: bool = False
    activation: str = "gelu"
    use_bias: bool = True
    dropout_rate: float = 0.0
    out_init_std: float = 0.02
    cross_attention: bool = False
    dtype: Dtype = jnp.float32

    def _attention(self, name: str, causal: bool, use_rotary: bool):
        return Attention(self.num_heads, self.head_dim, self.max_len, causal, use_rotary,
                         self.use_bias, out_init_std=self.out_init_std, dtype=self.dtype,
                         name=name)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, train: bool = False, decode: bool = False,
                 mask_BS=None, memory_BSD=None, memory_mask_BS=None):
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)

        def residual(x_BTD, h_BTD):
            return constrain(x_BTD + drop(h_BTD), BTD_AXES)

        def norm(name, x_BTD):
            return layer_norm(self.dtype, name, self.use_bias)(x_BTD)

        x_BTD = residual(x_BTD, self._attention("attention", self.causal, self.use_rotary)(
            norm("ln_attention", x_BTD), positions_BT, decode, mask_BS))
        if self.cross_attention:
            x_BTD = residual(x_BTD, self._attention("cross_attention", False, False)(
                norm("ln_cross_attention", x_BTD), positions_BT, False, memory_mask_BS,
                memory_BSD))
        h_BTD = MLP(self.mlp_size, self.activation, self.use_bias, out_init_std=self.out_init_std,
                    dtype=self.dtype, name="mlp")(norm("ln_mlp", x_BTD))
        return residual(x_BTD, h_BTD)


def empty_cache(model: nn.Module, *args, method=None):
    """Zeros shaped like the 'cache' collection `model.apply(..., *args, decode=True)` fills
    (shapes only: nothing is initialised)."""
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, decode=True,
                                                 method=method))
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract["cache"])


def remat_block(policy: str):
    """`Block`, rematerialised in the backward pass according to `policy` (see REMAT_POLICIES)."""
    if policy == "none":
        return Block
    return nn.remat(Block, policy=REMAT_POLICIES[policy], static_argnums=(3, 4))
