"""Causal language modelling: next-token cross-entropy (nats per token), optional z-loss.

Eval reduces per-window sums on the host, so `eval/loss` is the mean over every evaluated token;
`eval/bits_per_token` is the same in bits (bits per character for a char tokenizer).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax.errors import UserError
from fmjax.models import build_model
from fmjax.tasks.base import Task


class LanguageModel(Task):
    EVAL_METRICS = ("loss", "bits_per_token", "perplexity")

    def __init__(self, config, info):
        super().__init__(config, info)
        self.seq_len = info.input_shape[0]
        self.model = build_model(config.model, vocab_size=info.num_classes)
        if self.model.max_len < self.seq_len:   # learned positions past the table would be NaN
            raise UserError(f"config.model.max_len={self.model.max_len} is shorter than "
                            f"config.data.seq_len={self.seq_len}")
        self.z_loss = config.train.z_loss

    def example_batch(self):
        tokens = np.zeros((1, self.seq_len), np.int32)
        return {"inputs": tokens, "targets": tokens}

    def loss_fn(self, params, extra, batch, rng):
        logits_BTV, extra = self.apply_train(params, extra, batch["inputs"], rng)
        logits_BTV = logits_BTV.astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"]).mean()
        if not self.z_loss:
            return nll, ({"loss": nll}, extra)
        z_loss = jnp.square(jax.nn.logsumexp(logits_BTV, axis=-1)).mean()
        return nll + self.z_loss * z_loss, ({"loss": nll, "z_loss": z_loss}, extra)

    def eval_outputs(self, params, extra, batch):
        logits_BTV = self.model.apply({"params": params, **extra}, batch["inputs"], train=False)
        nll_BT = optax.softmax_cross_entropy_with_integer_labels(
            logits_BTV.astype(jnp.float32), batch["targets"])
        return {"nll_sum": nll_BT.sum(-1), "tokens": jnp.full(nll_BT.shape[:1], nll_BT.shape[1])}

    def eval_metrics(self, outputs):
        loss = float(outputs["nll_sum"].sum() / outputs["tokens"].sum())
        return {"loss": loss, "bits_per_token": loss / math.log(2),
                "perplexity": math.exp(min(loss, 700.0))}

    def tokens_per_step(self) -> int:
        return self.config.train.batch_size * self.seq_len

    def flops_per_step(self, num_params: int) -> float:
        return self.tokens_per_step() * self.model.flops_per_token(num_params, self.seq_len)
