"""Magnitude pruning: one shot (`prune`, for `fmjax compress`) or gradually while training
(`wrap`, the polynomial schedule of Zhu & Gupta 2017, "To prune, or not to prune").

The masks live in the optimizer state (bool, sharded like their parameters), so checkpoints and
resumed runs carry them. A masked weight is exactly 0, gets a zero gradient into the inner
optimizer, a zero update, and its per-parameter optimizer state (Adam's moments) is held at 0.

Prunable by default: every parameter with ndim >= 2 except biases (per-head biases are 2-D), norm
scales and embedding/position tables (paths ending in `embed`, `embedding`, `cls_token`);
`exclude` (regexes over paths, like `optimizer.freeze`) removes more.
"""

import dataclasses
import re
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax import ranges
from fmjax.errors import UserError
from fmjax.ranges import Fraction, NonNegativeInt, PositiveInt
from fmjax.tree_paths import check_each_matches, check_patterns, map_params, path_name

GRANULARITIES = ("global", "layer")
_TABLES = re.compile(r"(embed|embedding|cls_token)$")


@dataclasses.dataclass
class PruningOptions:
    """Every key of `config.pruning`, with its default and range (fmjax/ranges.py)."""
    sparsity: Fraction = 0.0           # final fraction of zeros among prunable weights; 0 = off
    initial_sparsity: Fraction = 0.0   # the schedule's value at begin_step
    begin_step: NonNegativeInt = 0
    end_step: NonNegativeInt = 0       # == begin_step: one shot at begin_step
    frequency: PositiveInt = 100       # steps between mask updates in [begin_step, end_step]
    granularity: str = "global"        # global: one threshold | layer: each weight alike
    exclude: Sequence[str] = ()        # regexes (re.search) over parameter paths: never pruned


def defaults() -> dict:
    """`config.pruning` as the base config holds it."""
    return dataclasses.asdict(PruningOptions())


def validate(p, num_steps: int) -> None:
    """UserError for anything wrong in `config.pruning` that shows without the model."""
    ranges.check_dataclass(p, PruningOptions, "pruning")
    if not p.sparsity:
        changed = [k for k, v in defaults().items() if k != "sparsity" and p[k] != type(p[k])(v)]
        if changed:
            raise UserError(f"config.pruning.{changed[0]} is set but config.pruning.sparsity is "
                            "0 (pruning off); set the final sparsity too")
    if p.granularity not in GRANULARITIES:
        raise UserError(f"unknown config.pruning.granularity '{p.granularity}' "
                        f"(known: {', '.join(GRANULARITIES)})")
    if p.end_step < p.begin_step:
        raise UserError(f"config.pruning.end_step={p.end_step} is before "
                        f"config.pruning.begin_step={p.begin_step}")
    if p.end_step > num_steps:
        raise UserError(f"config.pruning.end_step={p.end_step} is after the last step "
                        f"(config.train.num_steps={num_steps})")
    if p.sparsity and p.initial_sparsity > p.sparsity:
        raise UserError(f"config.pruning.initial_sparsity={p.initial_sparsity} is above "
                        f"config.pruning.sparsity={p.sparsity}")
    check_patterns("pruning.exclude", p.exclude)


def schedule(p) -> Callable:
    """step -> target sparsity: 0 before begin_step, then Zhu & Gupta's
    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0))**3, s_f from end_step on."""
    t0, t_end = p.begin_step, p.end_step

    def sparsity(step):
        step = jnp.asarray(step, jnp.float32)
        progress = jnp.clip((step - t0) / max(t_end - t0, 1), 0.0, 1.0) if t_end > t0 else 1.0
        s = p.sparsity + (p.initial_sparsity - p.sparsity) * (1.0 - progress) ** 3
        return jnp.where(step < t0, 0.0, s)
    return sparsity


def _is_mask_step(p, count):
    """Whether the update after `count` steps recomputes the masks: at steps t = count + 1 in
    [t0, t_end] every `frequency` steps and at t_end (a begin_step of 0: the first update)."""
    t = count + 1
    on_grid = (t >= p.begin_step) & (t <= p.end_step) & (
        ((t - p.begin_step) % p.frequency == 0) | (t == p.end_step))
    return on_grid | ((count == 0) & (p.begin_step == 0))


# ---- which parameters are prunable ---------------------------------------------------------------
def _is_box(x) -> bool:
    return isinstance(x, nn.LogicallyPartitioned)


def _is_prunable(path: str, x, exclude: Sequence[str]) -> bool:
    return (jnp.ndim(x) >= 2 and not path.endswith(("bias", "scale"))
            and not _TABLES.search(path) and not any(re.search(r, path) for r in exclude))


def prunable(params, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """{path: array} of the prunable parameters (unboxed)."""
    flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_box)[0]
    named = ((path_name(key), nn.unbox(x)) for key, x in flat)
    return {path: x for path, x in named if _is_prunable(path, x, exclude)}


def _check_exclude(params, exclude: Sequence[str]) -> None:
    """A misspelt pattern would silently prune what it meant to keep; nothing to prune is a
    config that does nothing."""
    check_each_matches("pruning.exclude", exclude,
                       jax.tree.leaves(map_params(lambda p, _: p, params)))
    if not prunable(params, exclude):
        raise UserError("config.pruning: this model has no prunable parameter (prunable: "
                        "ndim >= 2, not a bias, norm scale or embedding table, not excluded)")


# ---- masks ---------------------------------------------------------------------------------------
def _is_node(x) -> bool:
    return isinstance(x, optax.MaskedNode)


def _full_masks(params, exclude: Sequence[str]):
    """All-True bool masks (boxed like their parameters, so they get the same sharding) at the
    prunable parameters, `optax.MaskedNode` elsewhere."""
    def one(path, x):
        if not _is_prunable(path_name(path), nn.unbox(x), exclude):
            return optax.MaskedNode()
        return jax.tree.map(lambda v: jnp.ones(jnp.shape(v), jnp.bool_), x)
    return jax.tree_util.tree_map_with_path(one, params, is_leaf=_is_box)


def _keep_largest(score_N, sparsity):
    """Bool [N]: False at the round(sparsity * N) smallest scores (ties: the earlier index), so
    the sparsity is exact whatever the ties; `sparsity` may be traced."""
    n = score_N.shape[0]
    k = jnp.round(jnp.asarray(sparsity, jnp.float32) * n).astype(jnp.int32)
    order_N = jnp.argsort(score_N, stable=True)
    rank_N = jnp.zeros(n, jnp.int32).at[order_N].set(jnp.arange(n, dtype=jnp.int32))
    return rank_N >= k


def _new_masks(params, masks, sparsity, granularity: str):
    """Masks keeping the largest magnitudes; weights masked before rank below every other, so
    they stay masked (the schedule never decreases)."""
    flat_masks, treedef = jax.tree.flatten(masks, is_leaf=_is_node)
    flat_params = treedef.flatten_up_to(params)
    where = [i for i, m in enumerate(flat_masks) if not _is_node(m)]
    scores = [jnp.where(flat_masks[i], jnp.abs(flat_params[i]).astype(jnp.float32), -1.0)
              for i in where]
    if granularity == "layer":
        keeps = [_keep_largest(s.ravel(), sparsity).reshape(s.shape) for s in scores]
    else:
        keep_N = _keep_largest(jnp.concatenate([s.ravel() for s in scores]), sparsity)
        ends = np.cumsum([s.size for s in scores])[:-1]
        keeps = [k.reshape(s.shape) for k, s in zip(jnp.split(keep_N, ends), scores)]
    for i, keep in zip(where, keeps):
        flat_masks[i] = keep
    return treedef.unflatten(flat_masks)


def _masked(masks, tree, fill=lambda x: jnp.zeros_like(x)):
    """`tree` with fill(x) where a mask is False (MaskedNode: left as it is)."""
    return jax.tree.map(lambda m, x: x if _is_node(m) else jnp.where(m, x, fill(x)),
                        masks, tree, is_leaf=_is_node)


def _zero_masked_moments(inner_state, masks):
    """Per-parameter optimizer state at masked weights set to 0. optax keeps such state as copies
    of the params tree, so a state array belongs to parameter P when its path ends with P's path
    and it has P's shape (factored states, e.g. Adafactor's, are left as they are)."""
    by_path = sorted(((path_name(k), m) for k, m in
                      jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_node)[0]
                      if not _is_node(m)), key=lambda pm: -len(pm[0]))

    def one(key, x):
        name = path_name(key)
        for path, mask in by_path:
            if (name == path or name.endswith("/" + path)) and jnp.shape(x) == mask.shape:
                return jnp.where(mask, x, jnp.zeros_like(x))
        return x
    return jax.tree_util.tree_map_with_path(one, inner_state)


# ---- the optimizer wrapper -----------------------------------------------------------------------
class PruningState(NamedTuple):
    count: jax.Array    # int32: updates taken (the schedule's step)
    masks: Any          # the params tree: bool masks at prunable weights, MaskedNode elsewhere
    inner_state: Any


def wrap(tx: optax.GradientTransformation, p) -> optax.GradientTransformation:
    """`tx` with gradual magnitude pruning by `config.pruning` `p`: the masks are recomputed from
    the current magnitudes on the schedule's steps and fixed after end_step."""
    target = schedule(p)

    def init(params):   # runs in `train.prepare`: bad patterns stop the run before it writes
        _check_exclude(params, p.exclude)
        return PruningState(jnp.zeros((), jnp.int32), _full_masks(params, p.exclude),
                            tx.init(params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("pruning needs the parameters: call update(grads, state, params)")
        masks = jax.lax.cond(
            _is_mask_step(p, state.count),
            lambda: _new_masks(params, state.masks, target(state.count + 1), p.granularity),
            lambda: state.masks)
        updates, inner_state = tx.update(_masked(masks, updates), state.inner_state, params)
        # a newly masked weight moves to exactly 0; an old one stays there (-0. + 0. == 0.)
        updates = jax.tree.map(
            lambda m, u, x: u if _is_node(m) else jnp.where(m, u, -x.astype(u.dtype)),
            masks, updates, params, is_leaf=_is_node)
        return updates, PruningState(state.count + 1, masks,
                                     _zero_masked_moments(inner_state, masks))
    return optax.GradientTransformation(init, update)


# ---- one-shot pruning and measurement ------------------------------------------------------------
def prune(params, sparsity: float, granularity: str = "global", exclude: Sequence[str] = ()):
    """`params` (unboxed in the result) with the smallest-magnitude prunable weights set to 0:
    `sparsity` of all of them ('global') or of each ('layer')."""
    params = nn.unbox(params)
    _check_exclude(params, exclude)
    masks = _new_masks(params, _full_masks(params, exclude), sparsity, granularity)
    return _masked(masks, params)


def measured_sparsity(params, exclude: Sequence[str] = ()) -> jax.Array:
    """The fraction of zeros among the prunable weights (traceable: a train metric)."""
    weights = prunable(params, exclude).values()
    zeros = sum(jnp.sum(w == 0) for w in weights)
    return zeros / sum(w.size for w in weights)


def sparsity_report(params, exclude: Sequence[str] = ()) -> dict:
    """{"total": fraction of zeros among prunable weights, "layers": {path: fraction}}."""
    weights = {path: np.asarray(w) for path, w in prunable(params, exclude).items()}
    zeros = {path: int(np.count_nonzero(w == 0)) for path, w in weights.items()}
    return {"total": sum(zeros.values()) / sum(w.size for w in weights.values()),
            "layers": {path: zeros[path] / w.size for path, w in weights.items()}}
