"""Variational autoencoders on binary images: the negative ELBO as the loss; at eval the ELBO,
the KL term and an importance-weighted NLL bound (Burda et al.), in nats per image.

`eval/feature_distance` is the Fréchet distance between one prior sample per eval image
(Bernoulli pixels) and the eval images, in the features of fmjax's own classifier for the
dataset (fmjax/metrics/feature_distance.py; not comparable with Inception FID).

Eval draws k posterior samples per image from `fold_in(eval_key, example index)`, so the numbers
do not depend on batch size or mesh. neg_elbo = mean_i(-w_i) and iw_nll = -log mean_i exp(w_i)
over the same k log-weights w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), so iw_nll <= neg_elbo
holds exactly (Jensen), and both approach the true NLL from above as k grows.
"""

import dataclasses
import math
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax.models import build_model
from fmjax.ranges import INT32_MAX, PositiveInt, Range
from fmjax.tasks.base import GeneratesImages

# Seeds of eval's fixed draws (keys made at import would compile there)
EVAL_SEED, SAMPLE_SEED = 20260101, 20260102


@dataclasses.dataclass
class VAEOptions:
    iw_samples: PositiveInt = 100       # k posterior samples per eval image
    # Prior samples in each eval's image grid, and as many images beside their reconstructions
    # (half of them real: at least 2).
    num_eval_images: Annotated[int, Range(2, INT32_MAX, integer=True)] = 64


def bernoulli_log_prob(logits, x):
    """log p(x | logits), summed over every pixel: [B, Y, X, C] -> [B]."""
    return -optax.sigmoid_binary_cross_entropy(logits, x).sum(axis=(1, 2, 3))


def gaussian_log_prob(z, mean, logvar):
    return -0.5 * (jnp.square(z - mean) * jnp.exp(-logvar) + logvar + math.log(2 * math.pi)
                   ).sum(-1)


def kl_to_standard_normal(mean_BZ, logvar_BZ):
    return 0.5 * (jnp.exp(logvar_BZ) + jnp.square(mean_BZ) - 1.0 - logvar_BZ).sum(-1)


class VAE(GeneratesImages):
    Options = VAEOptions
    EVAL_METRICS = ("neg_elbo", "kl", "iw_nll", "loss", "feature_distance")

    def __init__(self, config, info):
        super().__init__(config, info)
        self.model = build_model(config.model, image_shape=tuple(info.input_shape))
        self._images_fn = jax.jit(self._images)

    def prior_samples(self, params, key, n: int):
        """n images drawn from the model: z ~ N(0, I), then Bernoulli pixels."""
        z_key, x_key = jax.random.split(key)
        z = jax.random.normal(z_key, (n, self.model.latent_dim))
        probs = jax.nn.sigmoid(self.model.apply({"params": params}, z, method="decode"))
        return probs, jax.random.bernoulli(x_key, probs).astype(jnp.float32)

    def example_batch(self):
        return {"inputs": np.zeros((1, *self.info.input_shape), np.float32)}

    def init(self, rng):
        x = self.example_batch()["inputs"]
        return self.model.init(rng, x, np.zeros((1, self.model.latent_dim), np.float32))

    def loss_fn(self, params, extra, batch, rng):
        x = batch["inputs"]
        noise_BZ = jax.random.normal(rng, (x.shape[0], self.model.latent_dim))
        logits, mean_BZ, logvar_BZ = self.model.apply({"params": params}, x, noise_BZ)
        reconstruction = -bernoulli_log_prob(logits, x).mean()
        kl = kl_to_standard_normal(mean_BZ, logvar_BZ).mean()
        loss = reconstruction + kl
        return loss, ({"loss": loss, "reconstruction": reconstruction, "kl": kl}, extra)

    def _log_weights(self, params, x_1HWC, key):
        """w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for k posterior samples of one image."""
        k, zdim = self.options.iw_samples, self.model.latent_dim
        mean, logvar = self.model.apply({"params": params}, x_1HWC, method="encode")
        z_IZ = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, (k, zdim))
        logits = self.model.apply({"params": params}, z_IZ, method="decode")
        log_px = bernoulli_log_prob(logits, jnp.broadcast_to(x_1HWC, logits.shape))
        log_pz = gaussian_log_prob(z_IZ, 0.0, jnp.zeros_like(z_IZ))
        log_qz = gaussian_log_prob(z_IZ, mean, logvar)
        return log_px + log_pz - log_qz, kl_to_standard_normal(mean, logvar)[0]

    def eval_outputs(self, params, extra, batch):
        eval_key, sample_key = jax.random.key(EVAL_SEED), jax.random.key(SAMPLE_SEED)

        def one(x_YXC, index):
            w_I, kl = self._log_weights(params, x_YXC[None], jax.random.fold_in(eval_key, index))
            k = w_I.shape[0]
            sample = self.prior_samples(params, jax.random.fold_in(sample_key, index), 1)[1][0]
            return {"neg_elbo": -w_I.mean(), "kl": kl,
                    "iw_nll": -(jax.nn.logsumexp(w_I) - math.log(k)), "sample": sample}
        return {**jax.vmap(one)(batch["inputs"], batch["index"]), "real": batch["inputs"]}

    def eval_metrics(self, outputs):
        metrics = {k: float(np.mean(outputs[k])) for k in ("neg_elbo", "kl", "iw_nll")}
        distance = self.feature_distance(outputs["sample"], outputs["real"])
        return {**metrics, "loss": metrics["neg_elbo"], "feature_distance": distance}

    def _images(self, params, real_BYXC):
        mean, _ = self.model.apply({"params": params}, real_BYXC, method="encode")
        recon = jax.nn.sigmoid(self.model.apply({"params": params}, mean, method="decode"))
        pairs = jnp.stack([real_BYXC, recon], axis=1).reshape(-1, *real_BYXC.shape[1:])
        return {"reconstructions": pairs,
                "prior_samples": self.prior_samples(params, jax.random.key(SAMPLE_SEED),
                                                    self.options.num_eval_images)[0]}

    def eval_images(self, params, extra):
        """Eval images next to their reconstructions (from the posterior mean), and the decoder's
        pixel means for fixed prior draws, so grids from successive evals are comparable."""
        real = self.pipeline.first_eval_inputs(self.options.num_eval_images // 2)
        return jax.device_get(self._images_fn(params, real))

    def sample_images(self, params, extra, num: int, seed: int) -> np.ndarray:
        """Decoder pixel means for `num` prior draws."""
        return np.asarray(self.prior_samples(params, jax.random.key(seed), num)[0])

    def interpolate(self, params, extra, num: int, seed: int) -> np.ndarray:
        """Decoder means along the great circle between two prior draws (slerp)."""
        from fmjax.metrics.image_grid import slerp_latents
        z_a, z_b = np.asarray(jax.random.normal(jax.random.key(seed), (2, self.model.latent_dim)))
        z = jnp.asarray(slerp_latents(z_a, z_b, num))
        return np.asarray(jax.nn.sigmoid(self.model.apply({"params": params}, z, method="decode")))
