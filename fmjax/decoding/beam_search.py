"""Beam search for autoregressive decoders with a KV cache, in one `jax.lax.while_loop`.

Each step extends every live hypothesis by every token and keeps the `beam_size` best candidates
by log-prob. Candidates ending in EOS leave the beam and compete, length-penalised, for the best
finished hypothesis of their batch row; the others stay alive. A finished slot is not refilled in
the same step (it is next step, from the survivors' children): that is what makes beam_size=1
exactly greedy decoding. (The Flax WMT / tensor2tensor variant keeps the top `beam` non-EOS of the
top 2*beam candidates alive; with beam_size=1 it can return a non-greedy hypothesis.)

The loop stops when no live hypothesis of any row can beat that row's best finished one (log-probs
only fall, so a live log-prob over the largest remaining length penalty bounds its future score)
or after `max_len` steps. A hypothesis still alive at `max_len` is finished there, truncated,
without EOS, so every row gets a result.
"""

import jax
import jax.numpy as jnp

# Dead and masked beams get this log-prob. Finite, so sums, divisions and comparisons on it stay
# finite (-inf - -inf is NaN); far below any real hypothesis's log-prob.
NEG_INF = -1.0e9


def length_penalty_factor(length, alpha: float) -> jax.Array:
    """GNMT length penalty ((5 + length) / 6) ** alpha; a score is log_prob / this."""
    return ((5.0 + length) / 6.0) ** alpha


def expand_to_beams(tree_B, beam_size: int):
    """Repeats each [B, ...] leaf to [B * beam_size, ...] (row b * beam_size + k), e.g. the
    encoder output or an empty decoder cache; 0-d leaves stay as they are."""
    return jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else jnp.repeat(x, beam_size, axis=0),
                        tree_B)


def _check_cache(cache, n: int) -> None:
    """Fails before tracing step_fn, whose own shape errors would hide the cause."""
    for path, x in jax.tree_util.tree_leaves_with_path(cache):
        if jnp.ndim(x) and jnp.shape(x)[0] != n:
            raise ValueError(f"cache leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(x)}; "
                             f"array leaves need leading dimension batch_size * beam_size = {n} "
                             "(see expand_to_beams) or must be 0-d")


def _gather_rows(cache, rows_M):
    """Reorders every [N, ...] leaf by parent row; 0-d leaves (a shared write index) pass."""
    return jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else jnp.take(x, rows_M, axis=0), cache)


def beam_search(step_fn, cache, batch_size: int, beam_size: int, max_len: int, bos_id: int,
                eos_id: int, length_penalty: float = 0.6) -> tuple[jax.Array, jax.Array]:
    """The best hypothesis per batch row: (tokens_BT int32, scores_B float32). Call under jax.jit.

    step_fn(cache, tokens_M1, position) -> (logits_MV, new_cache) runs the decoder one token on
    M = batch_size * beam_size rows, batch-major (row b * beam_size + w); tokens_M1 (int32) holds
    each hypothesis's last token (BOS at position 0); position is an int32 scalar. Logits are
    unnormalised (log_softmax is taken in float32).

    cache: a pytree (e.g. the decoder KV cache and the encoder memory, see `expand_to_beams`);
    new_cache must have its structure, shapes and dtypes. Each array leaf has leading dimension M
    and is reordered along it by the chosen parent hypothesis every step; 0-d leaves (e.g. a
    shared write index) are passed through from new_cache as they are.

    tokens_BT (T = max_len) excludes BOS, includes EOS, and is filled with eos_id after it; a
    hypothesis that reached max_len without EOS is returned truncated. scores_B is
    log_prob / length_penalty_factor(length), length counting the EOS token (length_penalty=0:
    the raw log-prob).
    """
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"need beam_size >= 1 and max_len >= 1, got {beam_size}, {max_len}")
    b, k, n = batch_size, beam_size, batch_size * beam_size
    _check_cache(cache, n)
    seq_BWT = jnp.full((b, k, max_len + 1), eos_id, jnp.int32).at[:, :, 0].set(bos_id)
    # Only beam 0 starts alive, so the first step does not expand k copies of BOS.
    logp_BW = jnp.full((b, k), NEG_INF, jnp.float32).at[:, 0].set(0.0)
    best_BT, best_B = seq_BWT[:, 0], jnp.full((b,), NEG_INF, jnp.float32)

    def keep_going(state):
        i, _, logp_BW, _, best_B, _ = state
        # The best score any live hypothesis could reach: its log-prob cannot rise, so divide by
        # the largest penalty over the lengths still possible (monotone: an end of the range).
        max_factor = jnp.maximum(length_penalty_factor(i + 1, length_penalty),
                                 length_penalty_factor(max_len, length_penalty))
        bound_B = jnp.max(logp_BW, axis=1) / max_factor
        return (i < max_len) & ~jnp.all(best_B >= bound_B)

    def step(state):
        i, seq_BWT, logp_BW, best_BT, best_B, cache = state
        logits_MV, cache = step_fn(cache, seq_BWT[:, :, i].reshape(n, 1), i)
        v = logits_MV.shape[-1]
        cand_BWV = logp_BW[:, :, None] + jax.nn.log_softmax(
            logits_MV.astype(jnp.float32), axis=-1).reshape(b, k, v)
        cand_logp_BW, flat_BW = jax.lax.top_k(cand_BWV.reshape(b, k * v), k)
        parent_BW, token_BW = flat_BW // v, flat_BW % v
        cand_BWT = jnp.take_along_axis(seq_BWT, parent_BW[:, :, None], axis=1)
        cand_BWT = cand_BWT.at[:, :, i + 1].set(token_BW)
        ends_BW = (token_BW == eos_id) | (i + 1 == max_len)
        best_BT, best_B = _update_best(best_BT, best_B, cand_BWT, cand_logp_BW, ends_BW,
                                       length_penalty_factor(i + 1, length_penalty))
        rows_M = (jnp.arange(b)[:, None] * k + parent_BW).reshape(n)
        return (i + 1, cand_BWT, jnp.where(ends_BW, NEG_INF, cand_logp_BW), best_BT, best_B,
                _gather_rows(cache, rows_M))

    state = (jnp.int32(0), seq_BWT, logp_BW, best_BT, best_B, cache)
    _, _, _, best_BT, best_B, _ = jax.lax.while_loop(keep_going, step, state)
    return best_BT[:, 1:], best_B


def _update_best(best_BT, best_B, cand_BWT, cand_logp_BW, ends_BW, factor):
    """Keeps per row the better of the best finished hypothesis and this step's best ending one
    (only the best is returned, so only it is kept; ties keep the earlier)."""
    score_BW = jnp.where(ends_BW, cand_logp_BW / factor, NEG_INF)
    top_B = jnp.argmax(score_BW, axis=1)
    top_score_B = jnp.take_along_axis(score_BW, top_B[:, None], axis=1)[:, 0]
    top_BT = jnp.take_along_axis(cand_BWT, top_B[:, None, None], axis=1)[:, 0]
    better_B = top_score_B > best_B
    return jnp.where(better_B[:, None], top_BT, best_BT), jnp.where(better_B, top_score_B, best_B)
