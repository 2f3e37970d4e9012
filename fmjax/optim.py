"""Optax optimizers and learning-rate schedules built from `config.optimizer`."""

import flax
import flax.linen as nn
import jax.numpy as jnp
import optax

from fmjax.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adafactor")
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "step")


def validate(opt) -> None:
    if opt.name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer '{opt.name}' (known: {', '.join(OPTIMIZERS)})")
    if opt.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule '{opt.schedule}' (known: {', '.join(SCHEDULES)})")
    if opt.learning_rate <= 0:
        raise UserError(f"config.optimizer.learning_rate must be positive, got {opt.learning_rate}")


def schedule(opt, num_steps: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step."""
    lr, warmup = opt.learning_rate, opt.warmup_steps
    if opt.schedule == "constant":
        return optax.constant_schedule(lr) if warmup == 0 else optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    if opt.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, num_steps, opt.end_learning_rate)
    if opt.schedule == "warmup_linear":
        return optax.join_schedules([
            optax.linear_schedule(0.0, lr, warmup),
            optax.linear_schedule(lr, opt.end_learning_rate, max(num_steps - warmup, 1))], [warmup])
    boundaries = {int(b): opt.decay_factor for b in opt.decay_boundaries}
    return optax.piecewise_constant_schedule(lr, boundaries)


def decay_mask(params):
    """True for weights that should decay: matrices, kernels and embeddings; not biases (even
    per-head ones, which are 2-D) or norm scales."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: jnp.ndim(nn.unbox(v)) > 1 and not k[-1].endswith("bias") for k, v in flat.items()})


def _base(opt, lr, mask) -> optax.GradientTransformation:
    """The update rule itself; adamw and adafactor apply their own (decoupled) weight decay."""
    if opt.name == "sgd":
        return optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
    if opt.name == "adam":
        return optax.adam(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if opt.name == "adamw":
        return optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay, mask=mask)
    if opt.name == "rmsprop":
        return optax.rmsprop(lr, eps=opt.eps, momentum=opt.momentum or None,
                             nesterov=opt.nesterov)
    return optax.adafactor(lr, weight_decay_rate=opt.weight_decay or None,
                           weight_decay_mask=mask)


def build(opt, num_steps: int, clip_grad_norm: float = 0.0) -> optax.GradientTransformation:
    """Optimizer from config: [global-norm clipping] -> [L2 decay] -> update rule.

    Weight decay skips biases and norm parameters unless `decay_biases_and_norms` is set; for
    sgd/adam/rmsprop it is coupled L2 added to the gradient.
    """
    mask = None if opt.decay_biases_and_norms else decay_mask
    parts = [optax.clip_by_global_norm(clip_grad_norm)] if clip_grad_norm > 0 else []
    if opt.weight_decay and opt.name in ("sgd", "adam", "rmsprop"):
        parts.append(optax.add_decayed_weights(opt.weight_decay, mask))
    parts.append(_base(opt, schedule(opt, num_steps), mask))
    return optax.chain(*parts)


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
