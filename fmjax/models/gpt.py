"""GPT-style decoder-only language model: tokens_BT -> logits_BTV.

Defaults follow nanoGPT (GPT-2 layout): learned positions, pre-LN blocks with GELU MLPs 4x wide,
biases, a final LayerNorm, output projection tied to the token embedding, N(0, 0.02) init with the
residual projections scaled by 1/sqrt(2 * num_layers).
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.layers import partitioned
from fmjax.models.transformer import (BTD_AXES, BTV_AXES, check_config, constrain,
                                     layer_norm, remat_block)
from fmjax.ranges import Fraction, PositiveInt


class GPT(nn.Module):
    vocab_size: int
    max_len: PositiveInt = 256                 # context length (positions)
    num_layers: PositiveInt = 6
    num_heads: PositiveInt = 6
    embed_dim: PositiveInt = 384
    mlp_ratio: PositiveInt = 4
    positions: str = "learned"         # learned | rotary
    activation: str = "gelu"           # gelu | swiglu
    use_bias: bool = True              # in every Dense and LayerNorm (nanoGPT's `bias`)
    tie_embeddings: bool = True
    dropout_rate: Fraction = 0.0
    remat: str = "none"                # none | full | save_dots
    dtype: Any = jnp.float32           # compute dtype; parameters stay float32

    def __post_init__(self):
        super().__post_init__()
        check_config(self, (self.positions in ("learned", "rotary"), "positions: learned | rotary"),
                     (self.activation in ("gelu", "swiglu"), "activation: gelu | swiglu"))

    @nn.compact
    def __call__(self, tokens_BT, train: bool = False, decode: bool = False):
        b, t = tokens_BT.shape
        positions_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
        if decode:   # continue from the positions already in the KV cache
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            positions_BT = positions_BT + index.value
            index.value = index.value + t
        embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="token_embed",
                         embedding_init=partitioned(nn.initializers.normal(0.02),
                                                    ("vocab", "embed")))
        x_BTD = embed(tokens_BT)
        if self.positions == "learned":
            table = self.param("position_embed",
                               partitioned(nn.initializers.normal(0.02), (None, "embed")),
                               (self.max_len, self.embed_dim))
            x_BTD = x_BTD + jnp.take(table, positions_BT, axis=0).astype(self.dtype)
        x_BTD = constrain(x_BTD, BTD_AXES)
        x_BTD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BTD)
        block = remat_block(self.remat)
        out_std = 0.02 / math.sqrt(2 * self.num_layers)
        for i in range(self.num_layers):
            x_BTD = block(self.num_heads, self.embed_dim // self.num_heads,
                          self.mlp_ratio * self.embed_dim, self.max_len, causal=True,
                          use_rotary=self.positions == "rotary", activation=self.activation,
                          use_bias=self.use_bias, dropout_rate=self.dropout_rate,
                          out_init_std=out_std, dtype=self.dtype,
                          name=f"block_{i}")(x_BTD, positions_BT, train, decode)
        x_BTD = layer_norm(self.dtype, "ln_final", self.use_bias)(x_BTD)
        if self.tie_embeddings:
            logits_BTV = embed.attend(x_BTD)
        else:
            logits_BTV = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype, name="head",
                                  kernel_init=partitioned(nn.initializers.normal(0.02),
                                                          ("embed", "vocab")))(x_BTD)
        return constrain(logits_BTV, BTV_AXES)

    def matmul_params(self, num_params: int) -> int:
        """Parameters that take part in a matmul per token (all but the position table, and the
        token table unless it is the tied output projection): PaLM's N in 6N."""
        excluded = self.max_len * self.embed_dim if self.positions == "learned" else 0
        if not self.tie_embeddings:
            excluded += self.vocab_size * self.embed_dim
        return num_params - excluded

    def flops_per_token(self, num_params: int, seq_len: int) -> float:
        """Training FLOPs per token, PaLM appendix B: 6N + 12 L H Q T. The attention term is
        counted in full (not halved for the causal mask), as PaLM and nanoGPT count it."""
        return 6 * self.matmul_params(num_params) + 12 * self.num_layers * self.embed_dim * seq_len
