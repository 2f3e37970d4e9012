"""The one jitted, sharded train step (and the eval step) shared by every task.

`train_call(state, batches_K) -> (state, metrics_K)` runs K = steps_per_call optimizer steps in
one device call (`lax.scan`), each optionally over micro-batches (a second `lax.scan`), with the
state donated so parameters are updated in place. The update itself is the task's
(`Task.update`): one optimizer over all parameters by default, two trees in turn for a GAN.
Both steps are traced with the logical axis rules bound, so the models' activation sharding
constraints apply (`fmjax inspect` counts them).
"""

import jax
import jax.numpy as jnp
import optax

from fmjax import sharding


def _micro_batches(batch: dict, num: int) -> dict:
    """[B, ...] -> [num, B/num, ...], micro-batch i taking rows i, i+num, ... so that every
    device holds an equal part of each micro-batch (no resharding)."""
    def split(x):
        return x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(split, batch)


def _grads(task, params, extra, batch, rng, accum_steps: int, mesh):
    """Mean gradient, metrics and updated extra collections over `accum_steps` micro-batches."""
    grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
    if accum_steps == 1:
        (_, (metrics, extra)), grads = grad_fn(params, extra, batch, rng)
        return grads, metrics, extra

    def body(carry, xs):
        grads_sum, extra = carry
        index, micro = xs
        micro = jax.lax.with_sharding_constraint(micro, sharding.batch_sharding(mesh))
        (_, (metrics, extra)), grads = grad_fn(params, extra, micro, jax.random.fold_in(rng, index))
        return (jax.tree.map(jnp.add, grads_sum, grads), extra), metrics

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads_sum, extra), metrics_A = jax.lax.scan(
        body, (zeros, extra), (jnp.arange(accum_steps), _micro_batches(batch, accum_steps)))
    grads = jax.tree.map(lambda g: g / accum_steps, grads_sum)
    return grads, jax.tree.map(lambda m: m.mean(0), metrics_A), extra


def _skip_if_nonfinite(state, new_state, metrics):
    """nan_policy='skip': keep the old state (the step still counts, so the data moves on) when
    the loss or any updated parameter is not finite, and count the skipped step."""
    finite = jnp.isfinite(metrics["loss"])
    for x in jax.tree.leaves(new_state.params):
        finite &= jnp.isfinite(x).all()
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    kept = kept.replace(skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    return kept, {**metrics, "skipped_steps": kept.skipped_steps}


def train_call_fn(task, tx: optax.GradientTransformation, learning_rate_fn, config, mesh):
    """Unjitted (state, batches with leading axis K, base_key) -> (state, metrics with leading
    axis K): the body of `make_train_call`, also vmapped over trial members
    (fmjax/sweep/vectorized.py). `learning_rate_fn(state)` is the learning rate to log."""
    accum_steps = config.train.grad_accum_steps

    def grads_fn(params, extra, batch, rng):
        return _grads(task, params, extra, batch, rng, accum_steps, mesh)

    def train_call(state, batches, base_key):
        def one_step(state, batch):
            rng = jax.random.fold_in(base_key, state.step)   # per-step randomness, history-free
            new_state, metrics = task.update(state, batch, rng, tx, grads_fn)
            if config.train.nan_policy == "skip":
                new_state, metrics = _skip_if_nonfinite(state, new_state, metrics)
            return (new_state.replace(step=state.step + 1),
                    {**metrics, "learning_rate": learning_rate_fn(state)})
        return jax.lax.scan(one_step, state, batches)
    return train_call


def make_train_call(task, tx: optax.GradientTransformation, lr_schedule, config, mesh,
                    state_shardings):
    """Jitted (state, batches with leading axis K) -> (state, metrics with leading axis K), under
    `config.sharding.rules`."""
    body = train_call_fn(task, tx, lambda state: lr_schedule(state.step), config, mesh)
    base_key = jax.random.key(config.train.seed)

    def train_call(state, batches):
        return body(state, batches, base_key)

    rules = sharding.logical_rules(config.sharding.rules)
    return jax.jit(sharding.with_rules(train_call, rules),
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh, leading_dims=1)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=0)


def make_eval_step(task, mesh, state_shardings):
    """Jitted (params, extra, batch) -> per-example outputs, still split over the batch axes,
    under the task's `config.sharding.rules`."""
    batch_sharding = sharding.batch_sharding(mesh)
    rules = sharding.logical_rules(task.config.sharding.rules)
    return jax.jit(sharding.with_rules(task.eval_outputs, rules),
                   in_shardings=(state_shardings.params, state_shardings.extra, batch_sharding),
                   out_shardings=batch_sharding)
