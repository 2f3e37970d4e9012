"""The train state and how it is born: sharded from the start, never whole on one device."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fmjax import sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    extra: Any               # non-parameter collections, e.g. {'batch_stats': ...}


def init_boxed(task, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """State whose params (and optimizer moments) are still boxed with logical axis names."""
    variables = dict(task.init(jax.random.key(seed)))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), extra=variables)


def abstract_and_shardings(task, tx, seed: int, mesh, rules):
    """(abstract unboxed state, matching NamedShardings), from shapes alone (`eval_shape`)."""
    with nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(lambda: init_boxed(task, tx, seed))
    shardings = sharding.tree_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            sharding.unbox(boxed), shardings)
    return abstract, shardings


def init_state(task, tx, seed: int, mesh, rules, shardings) -> TrainState:
    """Initialise directly into `shardings`: each device computes only its own shards."""
    init = jax.jit(lambda: sharding.unbox(init_boxed(task, tx, seed)), out_shardings=shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return init()
