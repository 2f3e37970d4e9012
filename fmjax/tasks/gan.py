"""GANs in the one train loop: each optimizer step updates the discriminator `d_steps` times,
then the generator once, inside the same jitted, sharded call (two parameter trees, two
optimizers: `config.optimizer` for the generator, `task_options.discriminator_optimizer` for the
discriminator).

Losses: `non_saturating` (Goodfellow et al.'s -log D(G(z)) for the generator), `hinge`, and
`wgan_gp` (Gulrajani et al.; needs `model.discriminator_norm='none'`). Eval reports
`eval/feature_distance`: the Fréchet distance between one sample per eval image (noise from
`fold_in(key, example index)`) and the eval images, in the features of fmjax's own classifier
for the dataset (fmjax/metrics/feature_distance.py; not comparable with Inception FID).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fmjax import optim, sharding
from fmjax.errors import UserError
from fmjax.models import build_model
from fmjax.ranges import NonNegativeFloat, PositiveInt
from fmjax.tasks.base import GeneratesImages

NOISE_SEED = 20260103   # eval's fixed noise; a key made at import would compile there
LOSSES = ("non_saturating", "hinge", "wgan_gp")


@dataclasses.dataclass
class GANOptions:
    loss: str = "non_saturating"
    gp_weight: NonNegativeFloat = 10.0   # wgan_gp: weight of the gradient penalty
    d_steps: PositiveInt = 1             # discriminator updates per generator update
    discriminator_optimizer: dict = dataclasses.field(     # keys of config.optimizer
        default_factory=lambda: dict(name="adam", learning_rate=2e-4, b1=0.5))
    num_eval_images: PositiveInt = 64    # the fixed-noise sample grid written at each eval


def _merge_stats(extra, new):
    """Batch statistics after a pass through one half of the model."""
    stats = dict(extra.get("batch_stats", {}))
    stats.update(new.get("batch_stats", {}))
    return {**extra, "batch_stats": stats} if stats else extra


class GAN(GeneratesImages):
    Options = GANOptions
    EVAL_METRICS = ("feature_distance",)

    def __init__(self, config, info):
        super().__init__(config, info)
        o = self.options
        if o.loss not in LOSSES:
            raise UserError(f"config.task_options.loss must be one of {', '.join(LOSSES)}")
        if o.loss == "wgan_gp" and config.model.discriminator_norm != "none":
            raise UserError("wgan_gp's gradient penalty is per example: set "
                            "config.model.discriminator_norm=none")
        if config.train.grad_accum_steps != 1:
            raise UserError("GANs do not support config.train.grad_accum_steps > 1")
        if config.pruning.sparsity > 0:
            raise UserError("config.pruning: the 'gan' task steps two optimizers of its own and "
                            "cannot be pruned; set config.pruning.sparsity=0")
        self.model = build_model(config.model, image_shape=tuple(info.input_shape))
        t = config.train   # one optimizer per parameter tree; `update` steps them in turn
        self.txs = {"generator": optim.build(config.optimizer, t.num_steps, t.clip_grad_norm),
                    "discriminator": optim.build(self._d_optimizer_config(), t.num_steps,
                                                 t.clip_grad_norm)}
        self._samples_fn = jax.jit(sharding.with_rules(   # evals run on the training mesh
            self._generate, sharding.logical_rules(config.sharding.rules)))

    # ---- set-up ----------------------------------------------------------------------------
    def _d_optimizer_config(self):
        d = optim.defaults()
        unknown = sorted(set(self.options.discriminator_optimizer) - set(d))
        if unknown:
            raise UserError(f"unknown key config.task_options.discriminator_optimizer."
                            f"{unknown[0]} (known: {', '.join(sorted(d))})")
        d.update(self.options.discriminator_optimizer)
        opt = ml_collections.ConfigDict(d)
        optim.validate(opt, "task_options.discriminator_optimizer")
        return opt

    def optimizer(self):
        return optim.per_tree(self.txs), optim.schedule(self.config.optimizer,
                                                        self.config.train.num_steps)

    def example_batch(self):
        return {"inputs": np.zeros((1, *self.info.input_shape), np.float32)}

    def init(self, rng):
        return self.model.init(rng, jnp.zeros((1, self.model.latent_dim)), train=False)

    # ---- training ----------------------------------------------------------------------------
    def _apply(self, params, extra, method, x, train=True):
        variables = {"params": params, **extra}
        if not train:
            return self.model.apply(variables, x, train=False, method=method), extra
        out, new = self.model.apply(variables, x, train=True, method=method,
                                    mutable=["batch_stats"])
        return out, _merge_stats(extra, new)

    def d_loss(self, d_params, params, extra, real, z, key):
        params = {**params, "discriminator": d_params}
        fake, extra = self._apply(params, extra, "generate", z)
        fake = jax.lax.stop_gradient(fake)
        d_real, extra = self._apply(params, extra, "discriminate", real)
        d_fake, extra = self._apply(params, extra, "discriminate", fake)
        loss_name = self.options.loss
        if loss_name == "non_saturating":
            loss = (jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake)).mean()
        elif loss_name == "hinge":
            loss = (jax.nn.relu(1 - d_real) + jax.nn.relu(1 + d_fake)).mean()
        else:
            loss = d_fake.mean() - d_real.mean() + self.options.gp_weight * self._penalty(
                params, extra, real, fake, key)
        return loss, ({"d_loss": loss, "d_real": d_real.mean(), "d_fake": d_fake.mean()},
                      extra)

    def _penalty(self, params, extra, real, fake, key):
        """(|grad_x D(x_hat)| - 1)^2 at random points x_hat between real and fake images."""
        eps = jax.random.uniform(key, (real.shape[0], 1, 1, 1))
        x_hat = eps * real + (1 - eps) * fake

        def d_sum(x):
            return self._apply(params, extra, "discriminate", x, train=False)[0].sum()
        norms = jnp.sqrt(jnp.square(jax.grad(d_sum)(x_hat)).sum(axis=(1, 2, 3)) + 1e-12)
        return jnp.square(norms - 1.0).mean()

    def g_loss(self, g_params, params, extra, z):
        params = {**params, "generator": g_params}
        fake, extra = self._apply(params, extra, "generate", z)
        d_fake, extra = self._apply(params, extra, "discriminate", fake)
        if self.options.loss == "non_saturating":
            loss = jax.nn.softplus(-d_fake).mean()
        else:
            loss = -d_fake.mean()
        return loss, ({"g_loss": loss}, extra)

    def update(self, state, batch, rng, tx, grads_fn):
        real = batch["inputs"]
        params, extra, opt_state = state.params, state.extra, dict(state.opt_state)
        zdim, b = self.model.latent_dim, real.shape[0]
        metrics = {}
        for name, (loss_fn, steps) in {"discriminator": (self.d_loss, self.options.d_steps),
                                       "generator": (self.g_loss, 1)}.items():
            for i in range(steps):
                key_z, key_gp = jax.random.split(jax.random.fold_in(rng, len(metrics) + i))
                z = jax.random.normal(key_z, (b, zdim))
                args = (params, extra, real, z, key_gp) if name == "discriminator" else \
                    (params, extra, z)
                (_, (m, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    params[name], *args)
                updates, opt_state[name] = self.txs[name].update(grads, opt_state[name],
                                                                 params[name])
                params = {**params, name: optax.apply_updates(params[name], updates)}
                metrics.update(m)
                metrics[f"{name}_grad_norm"] = optax.tree.norm(grads)
        metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]   # finite-loss check
        return state.replace(params=params, extra=extra, opt_state=opt_state), metrics

    # ---- evaluation and sampling -------------------------------------------------------------
    def _generate(self, params, extra, z):
        return self.model.apply({"params": params, **extra}, z, train=False, method="generate")

    def _noise(self, key, n):
        return jax.random.normal(key, (n, self.model.latent_dim))

    def eval_outputs(self, params, extra, batch):
        key = jax.random.key(NOISE_SEED)
        z = jax.vmap(lambda i: self._noise(jax.random.fold_in(key, i), 1)[0])(batch["index"])
        return {"sample": self._generate(params, extra, z), "real": batch["inputs"]}

    def eval_metrics(self, outputs):
        return {"feature_distance": self.feature_distance(outputs["sample"], outputs["real"])}

    def eval_images(self, params, extra):
        """Samples from one fixed noise batch, so successive evals show the same latents."""
        z = self._noise(jax.random.key(NOISE_SEED), self.options.num_eval_images)
        return {"samples": jax.device_get(self._samples_fn(params, extra, z))}

    def sample_images(self, params, extra, num: int, seed: int) -> np.ndarray:
        return np.asarray(self._samples_fn(params, extra, self._noise(jax.random.key(seed), num)))

    def interpolate(self, params, extra, num: int, seed: int) -> np.ndarray:
        """Generator outputs along the great circle between two noise draws (slerp)."""
        from fmjax.metrics.image_grid import slerp_latents
        z_a, z_b = np.asarray(self._noise(jax.random.key(seed), 2))
        return np.asarray(self._samples_fn(params, extra, jnp.asarray(slerp_latents(z_a, z_b, num))))
