"""Translation with an encoder–decoder: label-smoothed cross-entropy on the target tokens;
eval reports the teacher-forced loss and sacreBLEU of beam-search translations.

Targets end in EOS; the decoder reads them shifted right behind BOS (EOS and BOS are the two ids
after the tokenizer's vocabulary). Eval translates every eval source on the device (beam search
in one jitted loop, `fmjax/decoding/beam_search.py`), and BLEU is scored on the host against the raw
reference texts, so tokenization never flatters the number.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax.data.tokenizers import pad_ids
from fmjax.data.translation import bos_id, eos_id
from fmjax.decoding.beam_search import beam_search, expand_to_beams
from fmjax.errors import UserError
from fmjax.models import build_model
from fmjax.models.transformer import empty_cache
from fmjax.ranges import Fraction, NonNegativeFloat, PositiveInt
from fmjax.tasks.base import Task
from fmjax.token_ids import PAD_ID


@dataclasses.dataclass
class TranslationOptions:
    label_smoothing: Fraction = 0.1
    beam_size: PositiveInt = 4               # eval and `fmjax translate`'s default (1 = greedy)
    length_penalty: NonNegativeFloat = 0.6   # GNMT's alpha: score / ((5 + length) / 6) ** alpha


class Translation(Task):
    Options = TranslationOptions
    EVAL_METRICS = ("loss", "accuracy", "perplexity", "bleu")
    MAXIMISED = ("accuracy", "bleu")

    def __init__(self, config, info):
        super().__init__(config, info)
        self.source_len, self.target_len = info.input_shape[0], config.data.target_len
        self.vocab_size = info.num_classes           # the tokenizer's
        self.eos, self.bos = eos_id(self.vocab_size), bos_id(self.vocab_size)
        if config.model.name != "seq2seq":
            raise UserError(f"task 'translation' needs model 'seq2seq', not "
                            f"'{config.model.name}'")
        self.model = build_model(config.model, vocab_size=self.vocab_size + 2)
        if self.model.max_len < max(self.source_len, self.target_len):
            raise UserError(f"config.model.max_len={self.model.max_len} is shorter than "
                            f"config.data.source_len/target_len ({self.source_len}, "
                            f"{self.target_len})")
        self.tokenizer, self.references = None, None

    def bind_data(self, pipeline):
        self.tokenizer, self.references = pipeline.tokenizer, pipeline.references

    def bind_tokenizer(self, tokenizer):
        self.tokenizer = tokenizer

    def example_batch(self):
        return {"inputs": np.zeros((1, self.source_len), np.int32),
                "labels": np.zeros((1, self.target_len), np.int32)}

    def init(self, rng):
        batch = self.example_batch()
        params_rng, dropout_rng = jax.random.split(rng)
        return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["inputs"],
                               self.shift_right(batch["labels"]), train=False)

    def shift_right(self, targets_BT):
        """The decoder's input: BOS, then the targets but the last."""
        bos_B1 = jnp.full((targets_BT.shape[0], 1), self.bos, jnp.int32)
        return jnp.concatenate([bos_B1, targets_BT[:, :-1]], axis=1)

    def _token_stats(self, logits_BTV, targets_BT):
        """(per-token NLL, correct, real-token weights)."""
        logits_BTV = logits_BTV.astype(jnp.float32)
        weights_BT = (targets_BT != PAD_ID).astype(jnp.float32)
        labels_BT = jnp.maximum(targets_BT, 0)
        nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, labels_BT)
        return nll_BT, (logits_BTV.argmax(-1) == labels_BT) * weights_BT, weights_BT

    def loss_fn(self, params, extra, batch, rng):
        targets_BT = batch["labels"]
        logits_BTV = self.model.apply({"params": params}, batch["inputs"],
                                      self.shift_right(targets_BT), train=True,
                                      rngs={"dropout": rng}).astype(jnp.float32)
        nll_BT, correct_BT, weights_BT = self._token_stats(logits_BTV, targets_BT)
        smooth = optax.smooth_labels(jax.nn.one_hot(jnp.maximum(targets_BT, 0),
                                                    logits_BTV.shape[-1]),
                                     self.options.label_smoothing)
        smoothed_BT = optax.softmax_cross_entropy(logits_BTV, smooth)
        count = jnp.maximum(weights_BT.sum(), 1.0)
        loss = (smoothed_BT * weights_BT).sum() / count
        return loss, ({"loss": loss, "nll": (nll_BT * weights_BT).sum() / count,
                       "accuracy": correct_BT.sum() / count}, extra)

    def eval_outputs(self, params, extra, batch):
        targets_BT = batch["labels"]
        logits_BTV = self.model.apply({"params": params}, batch["inputs"],
                                      self.shift_right(targets_BT), train=False)
        nll_BT, correct_BT, weights_BT = self._token_stats(logits_BTV, targets_BT)
        tokens_BT, _ = self.translate_tokens(params, batch["inputs"], self.options.beam_size,
                                             self.options.length_penalty)
        return {"nll_sum": (nll_BT * weights_BT).sum(-1), "correct": correct_BT.sum(-1),
                "count": weights_BT.sum(-1), "translation": tokens_BT, "index": batch["index"]}

    def eval_metrics(self, outputs):
        import sacrebleu
        count = max(float(outputs["count"].sum()), 1.0)
        loss = float(outputs["nll_sum"].sum()) / count
        hypotheses = self.detokenize(outputs["translation"])
        references = [self.references[i] for i in outputs["index"]]
        return {"loss": loss, "accuracy": float(outputs["correct"].sum()) / count,
                "perplexity": math.exp(min(loss, 700.0)),
                "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score}

    def translate_tokens(self, params, source_BS, beam_size: int, length_penalty: float):
        """Beam search over the decoder with a KV cache -> (tokens_BT ending in EOS, scores_B)."""
        model, b = self.model, source_BS.shape[0]
        memory_BSD, mask_BS = model.apply({"params": params}, source_BS, method=model.encode)
        memory_MSD, mask_MS = expand_to_beams((memory_BSD, mask_BS), beam_size)
        cache = empty_cache(model, jnp.zeros((b * beam_size, 1), jnp.int32), memory_MSD,
                            mask_MS, method=model.decode)

        def step_fn(cache, tokens_M1, position):
            logits_N1V, mutated = model.apply({"params": params, "cache": cache}, tokens_M1,
                                              memory_MSD, mask_MS, decode=True, start=position,
                                              mutable=["cache"], method=model.decode)
            return logits_N1V[:, -1], mutated["cache"]

        return beam_search(step_fn, cache, b, beam_size, self.target_len, self.bos, self.eos,
                           length_penalty)

    def translate(self, params, texts: list[str], beam_size: int, length_penalty: float):
        """Translations of `texts` (needs `self.tokenizer`)."""
        translate = jax.jit(self.translate_tokens, static_argnums=2)
        tokens_BT, _ = translate(params, self.encode_sources(texts), beam_size, length_penalty)
        return self.detokenize(tokens_BT)

    def encode_sources(self, texts: list[str]) -> np.ndarray:
        """[N, source_len] token ids, truncated and padded; unknown text becomes <unk>."""
        return pad_ids(self.tokenizer.encode_batch(texts), self.source_len)

    def detokenize(self, tokens_BT) -> list[str]:
        """Text of each row's tokens before its first EOS (BOS, never a target, is dropped too)."""
        rows = []
        for tokens in np.asarray(tokens_BT).tolist():
            tokens = tokens[:tokens.index(self.eos)] if self.eos in tokens else tokens
            rows.append([t for t in tokens if 0 <= t < self.vocab_size])
        return self.tokenizer.decode_batch(rows)
