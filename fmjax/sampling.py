"""Sampling from a trained language model: KV-cache decoding in one jitted loop.

The prompt is encoded into the cache at once; then each step samples a token (temperature, top-k,
top-p) with key `fold_in(seed_key, i)` and feeds only that token. When the cache is full, its last
half is re-encoded and decoding goes on, so generations may be longer than the context.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.errors import UserError
from fmjax.models.transformer import empty_cache


def filter_logits(logits_SV, temperature: float, top_k: int, top_p: float):
    """Logits of the sampling distribution: tokens outside top-k / the top-p nucleus get -inf."""
    logits_SV = logits_SV.astype(jnp.float32) / temperature
    if top_k:
        kth_S1 = jax.lax.top_k(logits_SV, top_k)[0][:, -1:]
        logits_SV = jnp.where(logits_SV < kth_S1, -jnp.inf, logits_SV)
    if top_p < 1.0:
        sorted_SV = jnp.sort(logits_SV, axis=-1)[:, ::-1]
        probs_SV = jax.nn.softmax(sorted_SV, axis=-1)
        mass_before_SV = jnp.cumsum(probs_SV, axis=-1) - probs_SV
        # The smallest logit still inside the nucleus (the top token always is).
        cutoff_S1 = jnp.min(jnp.where(mass_before_SV < top_p, sorted_SV, jnp.inf), -1,
                            keepdims=True)
        logits_SV = jnp.where(logits_SV < cutoff_S1, -jnp.inf, logits_SV)
    return logits_SV


def next_token(logits_SV, key, temperature: float, top_k: int, top_p: float):
    if temperature == 0.0:
        return jnp.argmax(logits_SV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits_SV, temperature, top_k, top_p)
                                  ).astype(jnp.int32)


def check_prompt(model, prompt_P: np.ndarray) -> None:
    if len(prompt_P) == 0:
        raise UserError("the prompt is empty; give at least one character or token")
    if len(prompt_P) > model.max_len:
        raise UserError(f"the prompt is {len(prompt_P)} tokens but the model's context is "
                        f"{model.max_len}; shorten it")


@functools.partial(jax.jit, static_argnums=(0, 3, 5, 6, 7, 8))
def _generate(model, params, prompt_P, max_new_tokens, key, num_samples, temperature, top_k, top_p):
    s, p, max_len = num_samples, prompt_P.shape[0], model.max_len
    keep = max_len // 2    # tokens re-encoded when the cache is full

    def forward(cache, tokens_ST):
        logits_STV, mutated = model.apply({"params": params, "cache": cache}, tokens_ST,
                                          decode=True, mutable=["cache"])
        return mutated["cache"], logits_STV[:, -1]

    empty = empty_cache(model, jnp.zeros((s, 1), jnp.int32))
    cache, logits_SV = forward(empty, jnp.broadcast_to(prompt_P, (s, p)))
    tokens_SL = jnp.zeros((s, p + max_new_tokens), jnp.int32).at[:, :p].set(prompt_P)

    def step(carry, i):
        cache, logits_SV, tokens_SL = carry
        token_S = next_token(logits_SV, jax.random.fold_in(key, i), temperature, top_k, top_p)
        tokens_SL = tokens_SL.at[:, p + i].set(token_S)

        def refill(cache):
            window_SK = jax.lax.dynamic_slice(tokens_SL, (0, p + i + 1 - keep), (s, keep))
            return forward(empty, window_SK)

        def extend(cache):
            return forward(cache, token_S[:, None])

        if p + max_new_tokens <= max_len:   # the cache never fills
            cache, logits_SV = extend(cache)
        else:
            cache, logits_SV = jax.lax.cond(cache["index"] >= max_len, refill, extend, cache)
        return (cache, logits_SV, tokens_SL), None

    (_, _, tokens_SL), _ = jax.lax.scan(step, (cache, logits_SV, tokens_SL),
                                        jnp.arange(max_new_tokens))
    return tokens_SL


def generate(model, params, prompt_P: np.ndarray, max_new_tokens: int, seed: int = 0,
             num_samples: int = 1, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0) -> np.ndarray:
    """tokens [num_samples, len(prompt) + max_new_tokens]: the prompt, then the samples."""
    check_prompt(model, prompt_P)
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise UserError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
    return np.asarray(_generate(model, params, jnp.asarray(prompt_P, jnp.int32), max_new_tokens,
                                jax.random.key(seed), num_samples, float(temperature),
                                min(int(top_k), model.vocab_size), float(top_p)))


def generate_without_cache(model, params, prompt_P: np.ndarray, max_new_tokens: int,
                           seed: int = 0, num_samples: int = 1, temperature: float = 1.0,
                           top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Reference for tests: recompute the whole sequence for every new token (within context)."""
    key, p = jax.random.key(seed), len(prompt_P)
    tokens = np.zeros((num_samples, model.max_len), np.int32)   # causal: padding is never seen
    tokens[:, :p] = prompt_P
    logits_at = jax.jit(lambda t, i: model.apply({"params": params}, t)[:, i])
    for i in range(max_new_tokens):
        token = next_token(logits_at(tokens, p + i - 1), jax.random.fold_in(key, i), temperature,
                           top_k, top_p)
        tokens[:, p + i] = np.asarray(token)
    return tokens[:, :p + max_new_tokens]
