"""Optax optimizers and learning-rate schedules built from `config.optimizer`.

`muon` (Keller Jordan's modded-nanogpt; `optax.contrib.muon`) orthogonalizes the momentum of the
matrices inside `block_i`; embeddings, heads, biases and norm scales keep AdamW.

Fine-tuning knobs: `freeze` (regexes over parameter paths such as 'block_0/attention/query_kernel';
frozen parameters get no update and no optimizer state) and `layer_decay` (BEiT/ELECTRA layer-wise
learning-rate decay: the blocks nearest the input learn slowest).
"""

import dataclasses
import inspect
import re
from typing import Annotated, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from fmjax import ranges
from fmjax.errors import UserError
from fmjax.ranges import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, Range
from fmjax.tree_paths import check_each_matches, check_patterns, map_params

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adafactor", "muon")
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "step")


@dataclasses.dataclass
class OptimizerOptions:
    """Every key of `config.optimizer` (and of a GAN's `task_options.discriminator_optimizer`),
    with its default and the valid range of each number (fmjax/ranges.py)."""
    name: str = "adam"                 # sgd | adam | adamw | rmsprop | adafactor | muon
    learning_rate: PositiveFloat = 1e-3
    schedule: str = "constant"         # constant | warmup_cosine | warmup_linear | step
    warmup_steps: NonNegativeInt = 0
    end_learning_rate: NonNegativeFloat = 0.0   # where cosine/linear decay ends
    decay_boundaries: Sequence[NonNegativeInt] = ()   # step schedule: lr *= decay_factor here
    decay_factor: PositiveFloat = 0.1
    momentum: Fraction = 0.9           # sgd (0 = plain sgd), rmsprop, muon (its beta)
    nesterov: bool = False
    # muon: the AdamW learning rate of what is not a block matrix (0 = learning_rate)
    adam_learning_rate: NonNegativeFloat = 0.0
    b1: Fraction = 0.9
    b2: Fraction = 0.999
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0   # decoupled (adamw, adafactor), else L2 on the gradient
    decay_biases_and_norms: bool = False
    freeze: Sequence[str] = ()   # regexes (re.search) over parameter paths: no update, no state
    # the lr multiplier of a layer at depth d is layer_decay ** (L + 1 - d); 1 = off
    layer_decay: Annotated[float, Range(0, 1, low_open=True)] = 1.0


def defaults() -> dict:
    """`config.optimizer` as the base config holds it."""
    return dataclasses.asdict(OptimizerOptions())


def validate(opt, key: str = "optimizer") -> None:
    """UserError for anything wrong in optimizer config `opt`, shown as `config.<key>`."""
    if opt.name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer '{opt.name}' (known: {', '.join(OPTIMIZERS)})")
    if opt.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule '{opt.schedule}' (known: {', '.join(SCHEDULES)})")
    ranges.check_dataclass(opt, OptimizerOptions, key)
    if opt.adam_learning_rate and opt.name != "muon":
        raise UserError(f"config.{key}.adam_learning_rate is muon's (the rate of what is not a "
                        f"block matrix); {opt.name!r} has one rate: set learning_rate")
    check_patterns(f"{key}.freeze", opt.freeze)


def schedule(opt, num_steps: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step."""
    lr, warmup = opt.learning_rate, opt.warmup_steps
    if opt.schedule == "constant":
        return optax.constant_schedule(lr) if warmup == 0 else optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    if opt.schedule == "warmup_cosine":   # optax.warmup_cosine_decay_schedule's parts, without
        # its Python branch on lr == 0 (lr > 0 here), so that lr may be traced (`injected`)
        return optax.join_schedules([
            optax.linear_schedule(0.0, lr, warmup),
            optax.cosine_decay_schedule(lr, num_steps - warmup, opt.end_learning_rate / lr)],
            [warmup])
    if opt.schedule == "warmup_linear":
        return optax.join_schedules([
            optax.linear_schedule(0.0, lr, warmup),
            optax.linear_schedule(lr, opt.end_learning_rate, max(num_steps - warmup, 1))], [warmup])
    boundaries = {int(b): opt.decay_factor for b in opt.decay_boundaries}
    return optax.piecewise_constant_schedule(lr, boundaries)


def decay_mask(params):
    """True for weights that should decay: matrices, kernels and embeddings; not biases (even
    per-head ones, which are 2-D) or norm scales. (Frozen parameters, `optax.MaskedNode`s inside
    the trained partition, hold no array and stay as they are.)"""
    return map_params(lambda path, x: not isinstance(x, optax.MaskedNode) and jnp.ndim(x) > 1
                      and not path.endswith("bias"), params)


def muon_dimensions(params):
    """How muon sees each parameter as a matrix (reduction axes x output axes), None for AdamW:
    2-D kernels inside `block_i` are (in, out); the attention's 3-D kernels are (D, N, H) ->
    (in, heads x head) and `out_kernel` (N, H, D) -> (heads x head, out). Frozen parameters
    (`optax.MaskedNode`) are None."""
    def spec(path, x):
        if isinstance(x, optax.MaskedNode) or not (
                _BLOCK.match(path) and path.endswith("kernel") and jnp.ndim(x) in (2, 3)):
            return None
        if jnp.ndim(x) == 2:
            return optax.contrib.MuonDimensionNumbers(0, 1)
        if path.endswith("out_kernel"):
            return optax.contrib.MuonDimensionNumbers((0, 1), 2)
        return optax.contrib.MuonDimensionNumbers(0, (1, 2))
    specs = map_params(spec, params)
    if not jax.tree.leaves(specs):   # runs in optimizer init, before the workdir is touched
        raise UserError("optimizer 'muon' found no trained matrices inside block_i (it is for "
                        "Transformer blocks; the rest would silently get AdamW): use adamw")
    return specs


def _base(opt, v, lr, mask, num_steps: int) -> optax.GradientTransformation:
    """The update rule itself; adamw and adafactor apply their own (decoupled) weight decay.
    Structure comes from `opt` (a momentum or weight decay of 0 is left out), numbers from `v`
    (`opt` itself, or `opt` with injected values)."""
    momentum = v.momentum if opt.momentum else None
    if opt.name == "sgd":
        return optax.sgd(lr, momentum=momentum, nesterov=opt.nesterov)
    if opt.name == "adam":
        return optax.adam(lr, b1=v.b1, b2=v.b2, eps=v.eps)
    if opt.name == "adamw":
        return optax.adamw(lr, b1=v.b1, b2=v.b2, eps=v.eps, weight_decay=v.weight_decay,
                           mask=mask)
    if opt.name == "rmsprop":
        return optax.rmsprop(lr, eps=v.eps, momentum=momentum, nesterov=opt.nesterov)
    if opt.name == "muon":
        adam_lr = schedule(_Injected(v, {"learning_rate": v.adam_learning_rate}), num_steps) \
            if opt.adam_learning_rate else lr
        return optax.contrib.muon(
            lr, beta=v.momentum, weight_decay=v.weight_decay, weight_decay_mask=mask,
            nesterov=opt.nesterov, adam_b1=v.b1, adam_b2=v.b2, adam_weight_decay=v.weight_decay,
            adam_learning_rate=adam_lr, muon_weight_dimension_numbers=muon_dimensions)
    return optax.adafactor(lr, weight_decay_rate=v.weight_decay if opt.weight_decay else None,
                           weight_decay_mask=mask)


def freeze_labels(patterns) -> Callable:
    """params -> a tree of 'frozen' (path matched by one of `patterns`, re.search) / 'train'."""
    def labels(params):
        tree = map_params(lambda p, _: "frozen" if any(re.search(r, p) for r in patterns)
                           else "train", params)
        check_each_matches("optimizer.freeze", patterns,
                           jax.tree.leaves(map_params(lambda p, _: p, params)))
        return tree
    return labels


_BLOCK = re.compile(r"^block_(\d+)(/|$)")
_BEFORE_BLOCKS = re.compile(r"^[^/]*(embed|cls_token)")   # token/position/patch embeddings


def layer_depth(path: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 inside `block_i`, num_layers + 1 for what follows the blocks
    (final norm, heads)."""
    block = _BLOCK.match(path)
    if block:
        return int(block.group(1)) + 1
    return 0 if _BEFORE_BLOCKS.match(path) else num_layers + 1


def layer_decay_multipliers(params, decay: float):
    """The learning-rate multiplier of every parameter: decay ** (L + 1 - depth), L = number of
    `block_i` (BEiT, ELECTRA); 1 for the head, decay ** (L + 1) for the embeddings."""
    paths = jax.tree.leaves(map_params(lambda p, _: p, params))
    blocks = [int(m.group(1)) for m in map(_BLOCK.match, paths) if m]
    num_layers = max(blocks) + 1 if blocks else 0
    return map_params(lambda p, _: decay ** (num_layers + 1 - layer_depth(p, num_layers)), params)


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Multiply each update by its layer's multiplier: the same as a per-layer learning rate
    (decoupled weight decay, which adamw scales by the learning rate, included)."""
    def init(params):   # runs in `train.prepare`, before the workdir is touched
        paths = jax.tree.leaves(map_params(lambda p, _: p, params))
        if not any(map(_BLOCK.match, paths)):
            raise UserError("config.optimizer.layer_decay needs layers named block_0, block_1, "
                            f"... (gpt, bert, vit); this model has none (e.g. {paths[0]!r})")
        return optax.EmptyState()

    def update(updates, state, params=None):
        multipliers = layer_decay_multipliers(updates, decay)
        return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers), state
    return optax.GradientTransformation(init, update)


def build(opt, num_steps: int, clip_grad_norm: float = 0.0,
          injected: Sequence[str] = ()) -> optax.GradientTransformation:
    """Optimizer from config: [global-norm clipping] -> [L2 decay] -> update rule, over the
    parameters not frozen by `freeze`, then [layer-wise lr decay].

    Weight decay skips biases and norm parameters unless `decay_biases_and_norms` is set; for
    sgd/adam/rmsprop it is coupled L2 added to the gradient. Clipping sees only the trained
    parameters' gradients.

    `injected` names numeric options (INJECTABLE) that the update reads from the optimizer state
    (`optax.inject_hyperparams`, state.hyperparams[name]) instead of from `opt`, so that one
    vmapped train step can hold members that differ in them (fmjax/sweep/vectorized.py). Their
    values in `opt` still decide the structure (a weight decay or momentum of 0 leaves its
    transform out), so give there the largest value of any member.
    """
    if not injected:
        return _build(opt, opt, num_steps, clip_grad_norm)

    def factory(**hyperparams):
        return _build(opt, _Injected(opt, hyperparams), num_steps, clip_grad_norm)
    # inject_hyperparams injects the factory's named parameters
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in injected])
    return optax.inject_hyperparams(factory)(**{name: getattr(opt, name) for name in injected})


# Options that `build(..., injected=...)` may read from the optimizer state: plain arithmetic in
# the update and the schedule, never a Python branch.
INJECTABLE = ("learning_rate", "end_learning_rate", "b1", "b2", "eps", "weight_decay",
              "momentum")


class _Injected:
    """`opt` with some options replaced by (traced) values."""

    def __init__(self, opt, values: dict):
        self._opt, self._values = opt, values

    def __getattr__(self, name):
        return self._values[name] if name in self._values else getattr(self._opt, name)


def injected_schedule(opt, hyperparams: dict, num_steps: int) -> optax.Schedule:
    """The learning-rate schedule of a member whose injected options are `hyperparams`."""
    return schedule(_Injected(opt, hyperparams), num_steps)


def _build(opt, v, num_steps: int, clip_grad_norm: float) -> optax.GradientTransformation:
    """`build` with structure from `opt` and numbers from `v` (see `_base`)."""
    mask = None if opt.decay_biases_and_norms else decay_mask
    parts = [optax.clip_by_global_norm(clip_grad_norm)] if clip_grad_norm > 0 else []
    if opt.weight_decay and opt.name in ("sgd", "adam", "rmsprop"):
        parts.append(optax.add_decayed_weights(v.weight_decay, mask))
    parts.append(_base(opt, v, schedule(v, num_steps), mask, num_steps))
    tx = optax.chain(*parts)
    if opt.freeze:
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   freeze_labels(tuple(opt.freeze)))
    if opt.layer_decay != 1.0:
        tx = optax.chain(tx, scale_by_layer_decay(opt.layer_decay))
    return tx


def per_tree(txs: dict[str, optax.GradientTransformation]) -> optax.GradientTransformation:
    """One optimizer per top-level parameter tree (a GAN's generator and discriminator). Its
    state is {name: state}; a task may step one tree alone with `txs[name].update`."""
    def init(params):
        return {name: tx.init(params[name]) for name, tx in txs.items()}

    def update(grads, state, params=None):
        out = {name: tx.update(grads[name], state[name], None if params is None else params[name])
               for name, tx in txs.items()}
        return {n: u for n, (u, _) in out.items()}, {n: s for n, (_, s) in out.items()}
    return optax.GradientTransformation(init, update)
