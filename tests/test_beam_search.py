"""Beam search finds the exact best sequence when the beam holds every prefix, is greedy decoding
at beam_size=1, beats greedy where greedy is short-sighted, stops early, and reorders the cache."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.decoding.beam_search import beam_search, expand_to_beams, length_penalty_factor

EOS, BOS = 0, 1
MOD = 3   # the logits also depend on (sum of tokens fed so far) % MOD, held in the cache


def toy_tables(seed: int, batch: int, max_len: int, vocab: int, eos_bias: float = 0.0):
    """Random logits per (row, position, previous token) and per (row, running sum % MOD)."""
    rng = np.random.default_rng(seed)
    table_BPVV = rng.normal(size=(batch, max_len, vocab, vocab)).astype(np.float32) * 2
    table_BPVV[..., EOS] += eos_bias
    shift_BMV = rng.normal(size=(batch, MOD, vocab)).astype(np.float32)
    return table_BPVV, shift_BMV


def toy_logits(table_BPVV, shift_BMV, b, position, prev, total):
    return table_BPVV[b, position, prev] + shift_BMV[b, total % MOD]


def toy_step_fn(table_BPVV, shift_BMV, beam_size: int):
    """step_fn whose cache is the running token sum [N]: wrong reordering changes the logits."""
    table_BPVV, shift_BMV = jnp.asarray(table_BPVV), jnp.asarray(shift_BMV)

    def step_fn(sum_N, tokens_N1, position):
        sum_N = sum_N + tokens_N1[:, 0]
        b_N = jnp.arange(sum_N.shape[0]) // beam_size
        return toy_logits(table_BPVV, shift_BMV, b_N, position, tokens_N1[:, 0], sum_N), sum_N
    return step_fn


def log_softmax(x_V):
    x_V = x_V.astype(np.float64)
    return x_V - x_V.max() - np.log(np.exp(x_V - x_V.max()).sum())


def sequence_log_prob(table_BPVV, shift_BMV, b, start, tokens):
    prev, total, logp = BOS, start, 0.0
    for position, token in enumerate(tokens):
        total += prev
        logp += log_softmax(toy_logits(table_BPVV, shift_BMV, b, position, prev, total))[token]
        prev = token
    return logp


def padded(tokens, max_len):
    return list(tokens) + [EOS] * (max_len - len(tokens))


def brute_force(table_BPVV, shift_BMV, b, start, max_len, alpha):
    """The best of all sequences that end in EOS or reach max_len, by penalised log-prob."""
    vocab = table_BPVV.shape[-1]
    best = (-np.inf, None)
    for length in range(1, max_len + 1):
        for tokens in itertools.product(range(vocab), repeat=length):
            ends = tokens[-1] == EOS
            if EOS in tokens[:-1] or (not ends and length < max_len):
                continue
            logp = sequence_log_prob(table_BPVV, shift_BMV, b, start, tokens)
            best = max(best, (logp / length_penalty_factor(length, alpha), padded(tokens, max_len)))
    return best


def greedy(table_BPVV, shift_BMV, b, start, max_len, alpha):
    tokens, prev, total = [], BOS, start
    while len(tokens) < max_len and (not tokens or tokens[-1] != EOS):
        total += prev
        prev = int(np.argmax(toy_logits(table_BPVV, shift_BMV, b, len(tokens), prev, total)))
        tokens.append(prev)
    logp = sequence_log_prob(table_BPVV, shift_BMV, b, start, tokens)
    return logp / length_penalty_factor(len(tokens), alpha), padded(tokens, max_len)


def run_beam(table_BPVV, shift_BMV, starts_B, beam_size, max_len, alpha):
    step_fn = toy_step_fn(table_BPVV, shift_BMV, beam_size)
    cache_N = expand_to_beams(jnp.asarray(starts_B, jnp.int32), beam_size)
    decode = jax.jit(lambda cache: beam_search(step_fn, cache, len(starts_B), beam_size, max_len,
                                               BOS, EOS, length_penalty=alpha))
    tokens_BL, scores_B = decode(cache_N)
    chex.assert_shape(tokens_BL, (len(starts_B), max_len))
    chex.assert_type([tokens_BL, scores_B], [jnp.int32, jnp.float32])
    return np.asarray(tokens_BL), np.asarray(scores_B)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_wide_beam_equals_brute_force(alpha):
    """Vocab 5, max_len 4: a beam of 5**3 holds every candidate before the last step, so beam
    search is exhaustive; two rows with their own tables and start sums. The best sequences have
    length 4, so the sums from step 2 on (which need the cache reorder) matter."""
    max_len, starts = 4, [2, 7]
    table, shift = toy_tables(seed=0, batch=2, max_len=max_len, vocab=5, eos_bias=-1.0)
    tokens_BL, scores_B = run_beam(table, shift, starts, 5 ** 3, max_len, alpha)
    for b, start in enumerate(starts):
        score, tokens = brute_force(table, shift, b, start, max_len, alpha)
        np.testing.assert_array_equal(tokens_BL[b], tokens)
        np.testing.assert_allclose(scores_B[b], score, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_size_one_is_greedy(alpha):
    max_len, starts = 8, [0, 1, 2, 3, 4, 5]
    table, shift = toy_tables(seed=1, batch=6, max_len=max_len, vocab=5, eos_bias=-1.0)
    tokens_BL, scores_B = run_beam(table, shift, starts, 1, max_len, alpha)
    expected = [greedy(table, shift, b, s, max_len, alpha) for b, s in enumerate(starts)]
    lengths = [int((np.array(t) != EOS).sum()) for _, t in expected]
    assert min(lengths) < max_len == max(lengths), lengths   # both early EOS and truncation
    np.testing.assert_array_equal(tokens_BL, [t for _, t in expected])
    np.testing.assert_allclose(scores_B, [s for s, _ in expected], rtol=1e-5)


def test_beam_beats_greedy():
    """Token 2 is likelier first, but every continuation of it is flat; token 3 leads to a
    near-certain EOS. Greedy takes 2; a beam of 2 finds [3, EOS]."""
    vocab, max_len = 5, 4
    table = np.zeros((1, max_len, vocab, vocab), np.float32)
    table[0, 0, BOS, [2, 3]] = 3.0, 2.5
    table[0, 1, 3, EOS] = 10.0
    shift = np.zeros((1, MOD, vocab), np.float32)
    for alpha in (0.0, 0.6):
        greedy_score, greedy_tokens = greedy(table, shift, 0, 0, max_len, alpha)
        tokens_BL, scores_B = run_beam(table, shift, [0], 2, max_len, alpha)
        assert greedy_tokens[0] == 2 and list(tokens_BL[0]) == [3, EOS, EOS, EOS]
        assert scores_B[0] > greedy_score + 0.5, (scores_B, greedy_score)


def test_length_penalty_keeps_searching_past_a_finished_hypothesis():
    """[EOS] has log-prob -0.9, [2, 3, EOS] about -1.0: raw, [EOS] wins at once; penalised
    (alpha 0.6) the longer one wins, so the stop rule must not fire after the first step."""
    vocab, max_len = 5, 4
    table = np.full((1, max_len, vocab, vocab), -20.0, np.float32)
    table[0, 0, BOS, [EOS, 2]] = 0.0, -0.1
    table[0, 1, 2, 3] = table[0, 2, 3, EOS] = 0.0
    shift = np.zeros((1, MOD, vocab), np.float32)
    for alpha, expected in [(0.0, [EOS] * 4), (0.6, [2, 3, EOS, EOS])]:
        score, tokens = brute_force(table, shift, 0, 0, max_len, alpha)
        tokens_BL, scores_B = run_beam(table, shift, [0], 2, max_len, alpha)
        assert tokens == expected
        np.testing.assert_array_equal(tokens_BL[0], expected)
        np.testing.assert_allclose(scores_B[0], score, rtol=1e-5)


def test_never_likely_eos_gives_full_length_sequence():
    """EOS has logit -inf throughout: no hypothesis finishes, yet a finite max_len one returns."""
    max_len = 6
    table, shift = toy_tables(seed=2, batch=2, max_len=max_len, vocab=5)
    table[..., EOS] = -np.inf
    tokens_BL, scores_B = run_beam(table, shift, [0, 1], 3, max_len, 0.6)
    assert np.isfinite(scores_B).all() and (tokens_BL != EOS).all()
    for b in range(2):
        logp = sequence_log_prob(table, shift, b, b, tokens_BL[b])
        np.testing.assert_allclose(scores_B[b], logp / length_penalty_factor(max_len, 0.6),
                                   rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_stops_once_no_live_hypothesis_can_win(alpha):
    """EOS first has log-prob -0.04, every other first token < -4 (below -0.04 even after the
    largest length penalty), so one step decides: step_fn must run at position 0 only."""
    vocab, max_len, positions = 5, 10, []
    logits_V = jnp.array([4.0, -1.0, 0.0, -0.5, -2.0])

    def step_fn(cache, tokens_N1, position):
        jax.debug.callback(lambda p: positions.append(int(p)), position)
        return jnp.broadcast_to(logits_V, (tokens_N1.shape[0], vocab)), cache

    decode = jax.jit(lambda: beam_search(step_fn, {}, 1, 2, max_len, BOS, EOS, alpha))
    tokens_BL, scores_B = jax.block_until_ready(decode())
    assert positions == [0]
    np.testing.assert_array_equal(tokens_BL, [[EOS] * max_len])
    np.testing.assert_allclose(scores_B, jax.nn.log_softmax(logits_V)[EOS:EOS + 1], rtol=1e-5)


def test_kv_cache_with_scalar_index_is_reordered():
    """A KV-cache-like pytree: token history [N, L] and a float [N, 1] leaf (gathered each step)
    and a 0-d write index (passed through). The logits read the history, so without the reorder
    the result would differ from brute force (the tables of the first test)."""
    max_len, beam_size, starts = 4, 5 ** 3, [2, 7]
    table, shift = toy_tables(seed=0, batch=2, max_len=max_len, vocab=5, eos_bias=-1.0)
    table_BPVV, shift_BMV = jnp.asarray(table), jnp.asarray(shift)

    def step_fn(cache, tokens_N1, position):
        index = cache["index"]
        history_NL = jax.lax.dynamic_update_slice(cache["history_NL"], tokens_N1, (0, index))
        sum_N = cache["start_N1"][:, 0].astype(jnp.int32) + history_NL.sum(axis=1)
        b_N = jnp.arange(sum_N.shape[0]) // beam_size
        logits_NV = toy_logits(table_BPVV, shift_BMV, b_N, position, tokens_N1[:, 0], sum_N)
        logits_NV = jnp.where(index == position, logits_NV, jnp.nan)   # index must stay shared
        return logits_NV, dict(cache, history_NL=history_NL, index=index + 1)

    cache_B = dict(history_NL=jnp.zeros((2, max_len), jnp.int32),
                   start_N1=jnp.asarray(starts, jnp.float32)[:, None], index=jnp.int32(0))
    decode = jax.jit(lambda cache: beam_search(step_fn, cache, 2, beam_size, max_len, BOS, EOS))
    tokens_BL, scores_B = decode(expand_to_beams(cache_B, beam_size))
    for b, start in enumerate(starts):
        score, tokens = brute_force(table, shift, b, start, max_len, 0.6)
        np.testing.assert_array_equal(tokens_BL[b], tokens)
        np.testing.assert_allclose(scores_B[b], score, rtol=1e-5)

    with pytest.raises(ValueError, match=r"\['history_NL'\] has shape \(2, 4\)"):   # not expanded
        beam_search(step_fn, cache_B, 2, beam_size, max_len, BOS, EOS)
