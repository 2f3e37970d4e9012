"""Sampling from a trained language model: KV-cache decoding in jitted chunks.

The prompt is encoded into the cache at once; then each step samples a token (temperature, top-k,
top-p) with key `fold_in(seed_key, i)` and feeds only that token. When the cache is full, its last
half is re-encoded and decoding goes on, so generations may be longer than the context. Steps run
`CHUNK_SIZE` at a time in one compiled `lax.scan`, the cache carried from chunk to chunk, so the
caller can show text as it is generated; the tokens are the same however the steps are cut.
"""

import functools
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.errors import UserError
from fmjax.models.transformer import empty_cache

MAX_NEW_TOKENS = 1_000_000   # per request: a bound, so a typo cannot start a day-long run
MAX_SAMPLES = 1024           # continuations decoded side by side (one KV cache each)
CHUNK_SIZE = 256             # tokens per jitted decoding call: the streaming granularity
SEPARATOR = "\n---------------\n"   # between samples in `fmjax sample`'s output


def filter_logits(logits_BV, temperature: float, top_k: int, top_p: float):
    """Logits of the sampling distribution: tokens outside top-k / the top-p nucleus get -inf."""
    logits_BV = logits_BV.astype(jnp.float32) / temperature
    if top_k:
        kth_S1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_S1, -jnp.inf, logits_BV)
    if top_p < 1.0:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
        mass_before_SV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
        # The smallest logit still inside the nucleus (the top token always is).
        cutoff_S1 = jnp.min(jnp.where(mass_before_SV < top_p, sorted_BV, jnp.inf), -1,
                            keepdims=True)
        logits_BV = jnp.where(logits_BV < cutoff_S1, -jnp.inf, logits_BV)
    return logits_BV


def next_token(logits_BV, key, temperature: float, top_k: int, top_p: float):
    if temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits_BV, temperature, top_k, top_p)
                                  ).astype(jnp.int32)


def check_prompt(model, prompt_P: np.ndarray) -> None:
    if len(prompt_P) == 0:
        raise UserError("the prompt is empty; give at least one character or token")
    if len(prompt_P) > model.max_len:
        raise UserError(f"the prompt is {len(prompt_P)} tokens but the model's context is "
                        f"{model.max_len}; shorten it")


def check_options(max_new_tokens: int, num_samples: int, temperature: float, top_k: int,
                  top_p: float) -> None:
    """UserError for a request that is impossible or beyond the stated bounds, before any work."""
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise UserError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS:,} "
                        f"(got {max_new_tokens})")
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(f"num_samples must be between 1 and {MAX_SAMPLES} (got {num_samples})")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"temperature must be a finite number >= 0, 0 = greedy (got {temperature})")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0, 0 = all tokens (got {top_k})")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], 1 = all tokens (got {top_p})")


def _forward(model, params, cache, tokens_BT):
    """(the cache with `tokens_BT` appended, logits after the last of them [B, V])."""
    logits_BTV, mutated = model.apply({"params": params, "cache": cache}, tokens_BT,
                                      decode=True, mutable=["cache"])
    return mutated["cache"], logits_BTV[:, -1]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _encode_prompt(model, params, prompt_P, num_samples):
    """The decoding state after the prompt: (cache, logits, the newest max_len // 2 tokens,
    left-padded with zeros: what a cache refill re-encodes; padding is never re-encoded, as the
    cache only fills once max_len tokens exist)."""
    s, p, keep = num_samples, len(prompt_P), model.max_len // 2
    empty = empty_cache(model, jnp.zeros((s, 1), jnp.int32))
    cache, logits_BV = _forward(model, params, empty, jnp.broadcast_to(prompt_P, (s, p)))
    recent_T = jnp.zeros(keep, jnp.int32).at[-p:].set(prompt_P[-keep:])
    return cache, logits_BV, jnp.broadcast_to(recent_T, (s, keep))


@functools.partial(jax.jit, donate_argnames="state", static_argnames=(
    "model", "num_steps", "may_refill", "temperature", "top_k", "top_p"))
def _decode_chunk(model, params, state, key, first_step, *, num_steps, may_refill, temperature,
                  top_k, top_p):
    """`num_steps` tokens [S, num_steps] from the decoding `state`, and the state after them.

    Step i (global, from `first_step`) samples with `fold_in(key, i)`, so the tokens do not
    depend on how decoding is cut into chunks. A full cache is refilled with the newest
    max_len // 2 tokens, which `state` carries along (static `may_refill`: whether it can fill).
    """
    max_len = model.max_len

    def step(state, i):
        cache, logits_BV, recent_BT = state
        token_B = next_token(logits_BV, jax.random.fold_in(key, i), temperature, top_k, top_p)
        recent_BT = jnp.concatenate([recent_BT[:, 1:], token_B[:, None]], axis=1)

        def refill(cache):
            return _forward(model, params, empty_cache(model, token_B[:, None]), recent_BT)

        def extend(cache):
            return _forward(model, params, cache, token_B[:, None])

        if may_refill:
            cache, logits_BV = jax.lax.cond(cache["index"] >= max_len, refill, extend, cache)
        else:
            cache, logits_BV = extend(cache)
        return (cache, logits_BV, recent_BT), token_B

    state, tokens_TB = jax.lax.scan(step, state, first_step + jnp.arange(num_steps))
    return state, tokens_TB.T


def generate_chunks(model, params, prompt_P: np.ndarray, max_new_tokens: int, seed: int = 0,
                    num_samples: int = 1, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0, chunk_size: int = CHUNK_SIZE) -> Iterator[np.ndarray]:
    """The new tokens, as arrays [num_samples, <= chunk_size] as soon as each exists (the request
    is checked now, not at the first chunk).

    Chunks are equal in length (one compiled decoding function for the whole request); the
    last one may run a few steps past `max_new_tokens`, which are dropped."""
    check_prompt(model, prompt_P)
    check_options(max_new_tokens, num_samples, temperature, top_k, top_p)
    num_chunks = -(-max_new_tokens // chunk_size)
    steps = -(-max_new_tokens // num_chunks)
    options = dict(num_steps=steps, may_refill=len(prompt_P) + num_chunks * steps > model.max_len,
                   temperature=float(temperature), top_k=min(int(top_k), model.vocab_size),
                   top_p=float(top_p))
    prompt_P = jnp.asarray(prompt_P, jnp.int32)
    state = _encode_prompt(model, params, prompt_P, num_samples)
    return _chunks(model, params, state, jax.random.key(seed), max_new_tokens, options)


def _chunks(model, params, state, key, max_new_tokens: int, options: dict) -> Iterator[np.ndarray]:
    """`generate_chunks`' chunks; each next chunk is already running on the device while the
    caller handles this one."""
    steps, previous = options["num_steps"], None
    for first in range(0, max_new_tokens, steps):
        state, tokens_BT = _decode_chunk(model, params, state, key, first, **options)
        if previous is not None:
            yield np.asarray(previous)
        previous = tokens_BT
    yield np.asarray(previous)[:, :max_new_tokens - first]


def generate(model, params, prompt_P: np.ndarray, max_new_tokens: int, seed: int = 0,
             num_samples: int = 1, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """tokens [num_samples, len(prompt) + max_new_tokens]: the prompt, then the samples."""
    chunks = generate_chunks(model, params, prompt_P, max_new_tokens, seed, num_samples,
                             temperature, top_k, top_p, chunk_size)
    return np.concatenate([np.broadcast_to(prompt_P, (num_samples, len(prompt_P))), *chunks],
                          axis=1).astype(np.int32)


def write_samples(out, tokenizer, prompt_P: np.ndarray, chunks: Iterator[np.ndarray],
                  num_samples: int) -> None:
    """Writes the prompt and the first sample's text to `out` as its chunks arrive (flushed);
    other samples follow, each after a separator line, once all are done. The text written is
    exactly `SEPARATOR.join(decode(prompt + sample))` + newline."""
    stream, *others = [tokenizer.stream_decoder() for _ in range(num_samples)]
    later = [[decode(prompt_P)] for decode in others]
    _write(out, stream(prompt_P))
    for tokens_BT in chunks:
        _write(out, stream(tokens_BT[0]))
        for decode, texts, tokens_T in zip(others, later, tokens_BT[1:]):
            texts.append(decode(tokens_T))
    _write(out, "".join(SEPARATOR + "".join(texts) for texts in later) + "\n")


def _write(out, text: str) -> None:
    out.write(text)
    out.flush()


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
