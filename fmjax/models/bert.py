"""BERT-style encoder: tokens_BT -> per-token logits over the vocabulary (masked-LM head, tied
to the token embedding) from the shared pre-LN blocks with bidirectional attention."""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmjax.models.layers import dense, partitioned
from fmjax.models.transformer import constrain, layer_norm, remat_block


class BERT(nn.Module):
    vocab_size: int                    # including the [MASK] token
    max_len: int = 128
    num_layers: int = 4
    num_heads: int = 4
    embed_dim: int = 128
    mlp_ratio: int = 4
    dropout_rate: float = 0.1
    remat: str = "none"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens_BT, train: bool = False):
        b, t = tokens_BT.shape
        embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="token_embed",
                         embedding_init=partitioned(nn.initializers.normal(0.02),
                                                    ("vocab", "embed")))
        positions = self.param("position_embed",
                               partitioned(nn.initializers.normal(0.02), (None, "embed")),
                               (self.max_len, self.embed_dim))
        x_BTD = constrain(embed(tokens_BT) + positions[:t].astype(self.dtype),
                          "batch", "length", "embed")
        x_BTD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BTD)
        positions_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
        block = remat_block(self.remat)
        for i in range(self.num_layers):
            x_BTD = block(self.num_heads, self.embed_dim // self.num_heads,
                          self.mlp_ratio * self.embed_dim, self.max_len, causal=False,
                          dropout_rate=self.dropout_rate,
                          out_init_std=0.02 / math.sqrt(2 * self.num_layers), dtype=self.dtype,
                          name=f"block_{i}")(x_BTD, positions_BT, train, False)
        x_BTD = layer_norm(self.dtype, "ln_final")(x_BTD)
        # The masked-LM head: a transform, then the tied output projection.
        h_BTD = nn.gelu(dense(self.embed_dim, ("embed", "mlp"), self.dtype, "mlm_transform")(
            x_BTD), approximate=False)
        h_BTD = layer_norm(self.dtype, "mlm_ln")(h_BTD)
        return constrain(embed.attend(h_BTD), "batch", "length", "vocab")
