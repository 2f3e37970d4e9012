"""Vision Transformer (Dosovitskiy et al.): image patches -> the shared pre-LN encoder blocks
(`fmjax/models/transformer.py`, bidirectional attention) -> class token or mean pooling -> logits.

Patches are cut with a reshape and embedded by one dense layer (the same linear map as a
stride-p convolution, without XLA's CPU convolution cost).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmjax.errors import UserError
from fmjax.models.layers import dense, partitioned
from fmjax.models.transformer import BTD_AXES, check_config, constrain, layer_norm, remat_block
from fmjax.ranges import Fraction, PositiveInt


class ViT(nn.Module):
    num_classes: int
    patch_size: PositiveInt = 4
    num_layers: PositiveInt = 6
    num_heads: PositiveInt = 4
    embed_dim: PositiveInt = 128
    mlp_ratio: PositiveInt = 4
    pool: str = "cls"                  # cls | mean
    dropout_rate: Fraction = 0.0
    remat: str = "none"                # none | full | save_dots
    dtype: Any = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        check_config(self, (self.pool in ("cls", "mean"), "pool: cls | mean"))

    def patches(self, x_BYXC):
        """[B, Y, X, C] -> [B, T, p*p*C], T = (Y/p)(X/p) patches in row-major order."""
        b, h, w, c = x_BYXC.shape
        p = self.patch_size
        if h % p or w % p:
            raise UserError(f"config.model.patch_size={p} does not divide the {h}x{w} images")
        x = x_BYXC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    @nn.compact
    def __call__(self, x_BYXC, train: bool = False):
        x_BTD = dense(self.embed_dim, (None, "embed"), self.dtype, "patch_embed")(
            self.patches(x_BYXC.astype(self.dtype)))
        b, n, d = x_BTD.shape
        if self.pool == "cls":
            cls = self.param("cls_token", partitioned(nn.initializers.zeros_init(),
                                                      (None, None, "embed")), (1, 1, d))
            x_BTD = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(self.dtype), x_BTD],
                                    axis=1)
        positions = self.param("position_embed", partitioned(nn.initializers.normal(0.02),
                                                             (None, "embed")), x_BTD.shape[1:])
        x_BTD = constrain(x_BTD + positions.astype(self.dtype), BTD_AXES)
        x_BTD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BTD)
        positions_BT = jnp.broadcast_to(jnp.arange(x_BTD.shape[1]), x_BTD.shape[:2])
        block = remat_block(self.remat)
        for i in range(self.num_layers):
            x_BTD = block(self.num_heads, d // self.num_heads, self.mlp_ratio * d, x_BTD.shape[1],
                          causal=False, dropout_rate=self.dropout_rate, dtype=self.dtype,
                          name=f"block_{i}")(x_BTD, positions_BT, train, False)
        x_BTD = layer_norm(self.dtype, "ln_final")(x_BTD)
        pooled_BD = x_BTD[:, 0] if self.pool == "cls" else x_BTD.mean(axis=1)
        return dense(self.num_classes, ("embed", "classes"), self.dtype, "head")(pooled_BD)
