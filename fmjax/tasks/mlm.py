"""Masked-language-model pre-training (BERT): 15% of the tokens are chosen; of those, 80% become
[MASK], 10% a random token and 10% stay; the loss is the cross-entropy on the chosen tokens.

The text pipeline is the language-model one (windows of a token stream; its targets are unused).
[MASK] is one extra id after the tokenizer's vocabulary. Eval masks with
`fold_in(key(EVAL_SEED), window index)`, so eval numbers do not depend on batch size or mesh.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax.models import build_model
from fmjax.ranges import OpenFraction
from fmjax.tasks.base import Task

EVAL_SEED = 20260104   # a key made at import would compile there


@dataclasses.dataclass
class MLMOptions:
    mask_rate: OpenFraction = 0.15


class MaskedLanguageModel(Task):
    Options = MLMOptions
    EVAL_METRICS = ("loss", "accuracy", "perplexity")
    MAXIMISED = ("accuracy",)

    def __init__(self, config, info):
        super().__init__(config, info)
        self.seq_len = info.input_shape[0]
        self.mask_id = info.num_classes                     # one id past the tokenizer's
        self.model = build_model(config.model, vocab_size=info.num_classes + 1, num_classes=0)

    def example_batch(self):
        return {"inputs": np.zeros((1, self.seq_len), np.int32)}

    def corrupt(self, tokens_BT, key):
        """(corrupted tokens, chosen positions) by BERT's 80/10/10 rule."""
        k_choose, k_kind, k_random = jax.random.split(key, 3)
        chosen = jax.random.bernoulli(k_choose, self.options.mask_rate, tokens_BT.shape)
        kind = jax.random.uniform(k_kind, tokens_BT.shape)
        random_tokens = jax.random.randint(k_random, tokens_BT.shape, 0, self.mask_id)
        corrupted = jnp.where(kind < 0.8, self.mask_id,
                              jnp.where(kind < 0.9, random_tokens, tokens_BT))
        return jnp.where(chosen, corrupted, tokens_BT), chosen

    def _losses(self, logits_BTV, tokens_BT, chosen_BT):
        nll_BT = optax.softmax_cross_entropy_with_integer_labels(
            logits_BTV.astype(jnp.float32), tokens_BT)
        correct_BT = logits_BTV.argmax(-1) == tokens_BT
        return (jnp.where(chosen_BT, nll_BT, 0.0).sum(-1), jnp.where(chosen_BT, correct_BT, 0).sum(-1),
                chosen_BT.sum(-1))

    def loss_fn(self, params, extra, batch, rng):
        mask_key, dropout_key = jax.random.split(rng)
        tokens_BT = batch["inputs"]
        corrupted, chosen = self.corrupt(tokens_BT, mask_key)
        logits, extra = self.apply_train(params, extra, corrupted, dropout_key)
        nll, correct, count = (x.sum() for x in self._losses(logits, tokens_BT, chosen))
        count = jnp.maximum(count, 1)
        loss = nll / count
        return loss, ({"loss": loss, "accuracy": correct / count}, extra)

    def eval_outputs(self, params, extra, batch):
        tokens_BT = batch["inputs"]
        key = jax.random.key(EVAL_SEED)
        corrupted, chosen = jax.vmap(
            lambda t, i: self.corrupt(t[None], jax.random.fold_in(key, i)))(
            tokens_BT, batch["index"])
        corrupted, chosen = corrupted[:, 0], chosen[:, 0]
        logits = self.model.apply({"params": params, **extra}, corrupted, train=False)
        nll, correct, count = self._losses(logits, tokens_BT, chosen)
        return {"nll_sum": nll, "correct": correct, "count": count}

    def eval_metrics(self, outputs):
        count = max(int(outputs["count"].sum()), 1)
        loss = float(outputs["nll_sum"].sum() / count)
        return {"loss": loss, "accuracy": float(outputs["correct"].sum() / count),
                "perplexity": math.exp(min(loss, 700.0))}
