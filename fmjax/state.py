"""The train state and how it is born: sharded from the start, never whole on one device."""

import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fmjax import sharding
from fmjax.errors import UserError, first_line


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    extra: Any               # non-parameter collections, e.g. {'batch_stats': ...}
    skipped_steps: jax.Array  # int32 scalar: steps whose update nan_policy='skip' dropped


def init_boxed(task, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """State whose params (and optimizer moments) are still boxed with logical axis names."""
    variables = dict(task.init(jax.random.key(seed)))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), extra=variables,
                      skipped_steps=jnp.zeros((), jnp.int32))


def abstract_and_shardings(task, tx, seed: int, mesh, rules):
    """(abstract unboxed state, matching NamedShardings), from shapes alone (`eval_shape`).
    A model whose config does not fit the data's shapes is a UserError (this runs in `prepare`)."""
    try:
        with nn.logical_axis_rules(rules):
            boxed = jax.eval_shape(lambda: init_boxed(task, tx, seed))
    except UserError:
        raise
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as e:
        # e.g. a conv kernel longer than the input, or an empty list of layer widths
        raise UserError(f"config.model ('{task.config.model.name}') cannot be built for inputs "
                        f"of shape {tuple(task.info.input_shape)}: {first_line(e)}") from e
    shardings = sharding.tree_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            sharding.unbox(boxed), shardings)
    return abstract, shardings


# Below this many state elements, CPU init is compiled without LLVM optimisation: for the MNIST-1D
# CNN that cuts init's compile from 0.84 s to 0.21 s, while running the unoptimised RNG stays well
# under 0.1 s (at 12M elements it would cost 0.3 s more than it saves).
_UNOPTIMISED_CPU_INIT_MAX_ELEMENTS = 2**22


def init_compiler_options(abstract_state) -> dict | None:
    elements = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state))
    if jax.default_backend() == "cpu" and elements <= _UNOPTIMISED_CPU_INIT_MAX_ELEMENTS:
        return {"xla_backend_optimization_level": 0}
    return None


def init_state(task, tx, seed: int, mesh, rules, abstract_state) -> TrainState:
    """Initialise directly into `abstract_state`'s shardings: each device computes only its own
    shards."""
    shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
    init = jax.jit(lambda: sharding.unbox(init_boxed(task, tx, seed)), out_shardings=shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return init.lower().compile(init_compiler_options(abstract_state))()
