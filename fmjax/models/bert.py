"""BERT-style encoder from the shared pre-LN blocks with bidirectional attention: tokens_BT ->
per-token logits over the vocabulary (the masked-LM head, tied to the token embedding), or with
`num_classes > 0` -> class logits (fine-tuning).

The classifier reads the mean of the final-layer states of the real tokens; padding (id -1 in
tokens_BT) is masked out of attention and of the mean. Both modes share the encoder's parameter
names (`token_embed`, `position_embed`, `block_i`, `ln_final`), so a masked-LM checkpoint
initialises the classifier's encoder (`config.init_from`); only `classifier` is new.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmjax.token_ids import PAD_ID
from fmjax.errors import UserError
from fmjax.models.layers import dense, partitioned
from fmjax.models.transformer import (BTD_AXES, BTV_AXES, check_config, constrain,
                                     layer_norm, remat_block)
from fmjax.ranges import Fraction, NonNegativeInt, PositiveInt



class BERT(nn.Module):
    vocab_size: int                    # including the [MASK] token
    num_classes: NonNegativeInt = 0    # 0: the masked-LM head; > 0: a classification head
    max_len: PositiveInt = 128
    num_layers: PositiveInt = 4
    num_heads: PositiveInt = 4
    embed_dim: PositiveInt = 128
    mlp_ratio: PositiveInt = 4
    dropout_rate: Fraction = 0.1
    remat: str = "none"
    dtype: Any = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        check_config(self)

    @nn.compact
    def __call__(self, tokens_BT, train: bool = False):
        b, t = tokens_BT.shape
        if t > self.max_len:
            raise UserError(f"sequences of {t} tokens are longer than config.model.max_len="
                            f"{self.max_len}")
        # Only classification inputs are padded; the masked-LM windows never are.
        mask_BT = tokens_BT != PAD_ID if self.num_classes else None
        if mask_BT is not None:
            tokens_BT = jnp.where(mask_BT, tokens_BT, 0)
        embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="token_embed",
                         embedding_init=partitioned(nn.initializers.normal(0.02),
                                                    ("vocab", "embed")))
        positions = self.param("position_embed",
                               partitioned(nn.initializers.normal(0.02), (None, "embed")),
                               (self.max_len, self.embed_dim))
        x_BTD = constrain(embed(tokens_BT) + positions[:t].astype(self.dtype), BTD_AXES)
        x_BTD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BTD)
        positions_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
        block = remat_block(self.remat)
        for i in range(self.num_layers):
            x_BTD = block(self.num_heads, self.embed_dim // self.num_heads,
                          self.mlp_ratio * self.embed_dim, self.max_len, causal=False,
                          dropout_rate=self.dropout_rate,
                          out_init_std=0.02 / math.sqrt(2 * self.num_layers), dtype=self.dtype,
                          name=f"block_{i}")(x_BTD, positions_BT, train, False, mask_BT)
        x_BTD = layer_norm(self.dtype, "ln_final")(x_BTD)
        if self.num_classes:
            return self.classify(x_BTD, mask_BT, train)
        # The masked-LM head: a transform, then the tied output projection.
        h_BTD = nn.gelu(dense(self.embed_dim, ("embed", "mlp"), self.dtype, "mlm_transform")(
            x_BTD), approximate=False)
        h_BTD = layer_norm(self.dtype, "mlm_ln")(h_BTD)
        return constrain(embed.attend(h_BTD), BTV_AXES)

    def classify(self, x_BTD, mask_BT, train: bool):
        """Mean of the real tokens' states -> dropout -> class logits."""
        weights_BT1 = mask_BT[..., None].astype(x_BTD.dtype)
        pooled_BD = (x_BTD * weights_BT1).sum(1) / jnp.maximum(weights_BT1.sum(1), 1)
        pooled_BD = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled_BD)
        return dense(self.num_classes, ("embed", "classes"), self.dtype, "classifier")(pooled_BD)
