"""Encoder–decoder Transformer for translation (Vaswani et al., pre-LN): source tokens_BS and
shifted target tokens_BT -> logits_BTV.

One token embedding is shared by source, target and the (tied) output projection, as with a
shared SentencePiece vocabulary. Token arrays mark padding with -1: encoder self-attention and
decoder cross-attention ignore padded source positions; decoder self-attention is causal, so
padding after the end of a target is never seen by a real token. The blocks are the shared ones
(`fmjax/models/transformer.py`); decoder blocks add cross-attention, and in `decode` mode keep a
KV cache so beam search feeds one token per step.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmjax.token_ids import PAD_ID
from fmjax.models.layers import partitioned
from fmjax.models.transformer import (BTD_AXES, BTV_AXES, check_config, constrain,
                                     layer_norm, remat_block)
from fmjax.ranges import Fraction, PositiveInt



class EncoderDecoder(nn.Module):
    vocab_size: int                    # tokenizer vocabulary + EOS + BOS
    max_len: PositiveInt = 128                 # positions, for source and target alike
    num_layers: PositiveInt = 3                # encoder blocks
    num_decoder_layers: PositiveInt = 3
    num_heads: PositiveInt = 4
    embed_dim: PositiveInt = 256
    mlp_ratio: PositiveInt = 4
    dropout_rate: Fraction = 0.1
    remat: str = "none"                # none | full | save_dots
    dtype: Any = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        check_config(self)

    def setup(self):
        self.token_embed = nn.Embed(
            self.vocab_size, self.embed_dim, dtype=self.dtype,
            embedding_init=partitioned(nn.initializers.normal(0.02), ("vocab", "embed")))
        positions = partitioned(nn.initializers.normal(0.02), (None, "embed"))
        self.encoder_positions = self.param("encoder_position_embed", positions,
                                            (self.max_len, self.embed_dim))
        self.decoder_positions = self.param("decoder_position_embed", positions,
                                            (self.max_len, self.embed_dim))
        block = remat_block(self.remat)
        num_blocks = self.num_layers + self.num_decoder_layers
        kwargs = dict(num_heads=self.num_heads, head_dim=self.embed_dim // self.num_heads,
                      mlp_size=self.mlp_ratio * self.embed_dim, max_len=self.max_len,
                      dropout_rate=self.dropout_rate, dtype=self.dtype,
                      out_init_std=0.02 / math.sqrt(2 * num_blocks))
        self.encoder_blocks = [block(causal=False, name=f"encoder_block_{i}", **kwargs)
                               for i in range(self.num_layers)]
        self.decoder_blocks = [block(causal=True, cross_attention=True,
                                     name=f"decoder_block_{i}", **kwargs)
                               for i in range(self.num_decoder_layers)]
        self.encoder_ln = layer_norm(self.dtype)
        self.decoder_ln = layer_norm(self.dtype)
        self.dropout = nn.Dropout(self.dropout_rate)

    def _embed(self, tokens_BT, table, positions_BT, train: bool):
        x_BTD = self.token_embed(jnp.maximum(tokens_BT, 0))
        x_BTD = x_BTD + jnp.take(table, positions_BT, axis=0).astype(self.dtype)
        return self.dropout(constrain(x_BTD, BTD_AXES), deterministic=not train)

    def encode(self, source_BS, train: bool = False):
        """-> (memory_BSD, source_mask_BS): the encoder output and which positions are real."""
        b, s = source_BS.shape
        mask_BS = source_BS != PAD_ID
        positions_BS = jnp.broadcast_to(jnp.arange(s), (b, s))
        x_BSD = self._embed(source_BS, self.encoder_positions, positions_BS, train)
        for block in self.encoder_blocks:
            x_BSD = block(x_BSD, positions_BS, train, False, mask_BS)
        return self.encoder_ln(x_BSD), mask_BS

    def decode(self, target_in_BT, memory_BSD, source_mask_BS, train: bool = False,
               decode: bool = False, start=0):
        """Logits for the next target token at every position of `target_in_BT` (BOS first).
        With `decode`, `target_in_BT` sits at positions `start`, `start + 1`, ... and its keys
        and values are added to the KV cache that holds the earlier positions."""
        b, t = target_in_BT.shape
        positions_BT = jnp.broadcast_to(start + jnp.arange(t), (b, t))
        x_BTD = self._embed(target_in_BT, self.decoder_positions, positions_BT, train)
        for block in self.decoder_blocks:
            x_BTD = block(x_BTD, positions_BT, train, decode, None, memory_BSD, source_mask_BS)
        logits_BTV = self.token_embed.attend(self.decoder_ln(x_BTD))
        return constrain(logits_BTV, BTV_AXES)

    def __call__(self, source_BS, target_in_BT, train: bool = False):
        memory_BSD, mask_BS = self.encode(source_BS, train)
        return self.decode(target_in_BT, memory_BSD, mask_BS, train)
