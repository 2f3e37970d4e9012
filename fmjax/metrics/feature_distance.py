"""`eval/feature_distance`: a Fréchet distance between generated and real images, measured in
the feature space of a small CNN classifier that fmjax trains itself on the same dataset.

    net = load_or_train("digits", arrays)          # trains once, then loads from the cache
    net.test_accuracy                               # the classifier's accuracy on arrays.x_eval
    net.distance(generated_images, real_images)     # images NHWC float32 in [0, 1]

The distance is ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between the means and
covariances of the classifier's 128-d penultimate activations, the formula of FID.

READ THIS BEFORE QUOTING A NUMBER: this is NOT FID. It is not comparable with Inception-based FID,
nor with any number computed with another feature network. It is comparable only within fmjax,
for the same dataset and the same cached classifier (the cache file's name carries the hash that
identifies it: `FeatureNet.path`), and for the same sample sizes (the estimate is biased upwards
for small samples, like FID). Quote the classifier's `test_accuracy` and the sample sizes with it.

The classifier is trained deterministically from a seed and its parameters are stored with
flax.serialization (msgpack) under `cache_dir()/feature_nets/{dataset}_{hash}.msgpack`, with its
test accuracy in a JSON file beside it, so later runs (offline ones too) reuse the same net. The
hash covers ARCH_VERSION, the image shape, the training recipe and a digest of the dataset's
arrays, so a different dataset never reuses a stale net. Bump ARCH_VERSION whenever the
architecture or the training code changes in a way that changes the trained parameters.
"""

import dataclasses
import functools
import hashlib
import json
import pathlib
import re
import time
import warnings
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

from fmjax.runtime.cache import cache_dir
from fmjax.runtime.workdir_files import write_atomic

ARCH_VERSION = 1
FEATURE_DIM = 128
DEFAULT_STEPS = 600
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 2e-3


class FeatureCNN(nn.Module):
    """Two 3x3 conv+relu layers (32, 64 channels), each followed by 2x2 average pooling where the
    spatial size is still at least 4, global average pooling, a 128-unit relu "feature" layer
    and a logits layer. 8x8 digits: 8 -> 4 -> 2; 28x28 MNIST: 28 -> 14 -> 7."""
    num_classes: int
    feature_dim: int = FEATURE_DIM

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        for channels in (32, 64):
            x = nn.relu(nn.Conv(channels, (3, 3), padding="SAME")(x))
            if min(x.shape[1], x.shape[2]) >= 4:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        features = nn.relu(nn.Dense(self.feature_dim, name="feature")(x))
        if return_features:
            return features
        return nn.Dense(self.num_classes, name="logits")(features)


def _check_images(images, image_shape=None) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [B, Y, X, C] (NHWC); got shape {images.shape}")
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"images have shape {images.shape[1:]} per example; this feature net "
                         f"was trained on {tuple(image_shape)}")
    return images


def train_classifier(x_train, y_train, num_classes: int, seed: int = 0,
                     steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                     learning_rate: float = DEFAULT_LEARNING_RATE) -> dict:
    """Train FeatureCNN with Adam and softmax cross-entropy; returns the flax variables
    ({"params": ...}). Deterministic given `seed`: init from jax.random.key(seed), batches from
    numpy's default_rng(seed) (reshuffled each epoch)."""
    x_train = _check_images(x_train)
    y_train = np.asarray(y_train, np.int32)
    n = len(x_train)
    batch_size = min(batch_size, n)
    model = FeatureCNN(num_classes)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, *x_train.shape[1:]), jnp.float32))
    tx = optax.adam(learning_rate)
    opt_state = tx.init(variables)

    @jax.jit
    def step(variables, opt_state, x, y):
        def loss_fn(v):
            logits = model.apply(v, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        grads = jax.grad(loss_fn)(variables)
        updates, opt_state = tx.update(grads, opt_state, variables)
        return optax.apply_updates(variables, updates), opt_state

    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    order = np.empty(0, np.int64)
    for s in range(steps):
        if s % per_epoch == 0:
            order = rng.permutation(n)
        index = order[(s % per_epoch) * batch_size:(s % per_epoch + 1) * batch_size]
        variables, opt_state = step(variables, opt_state, x_train[index], y_train[index])
    return jax.device_get(variables)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(model, variables, x, return_features):
    return model.apply(variables, x, return_features=return_features)


def _batched(model, variables, images, return_features, batch_size) -> np.ndarray:
    """model.apply over `images` in fixed-size batches (the last one padded: one compilation)."""
    n = len(images)
    batch_size = max(1, min(batch_size, n))
    out = []
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        if len(chunk) < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]),
                                                    chunk.dtype)])
        out.append(np.asarray(_apply(model, variables, chunk, return_features))
                   [:min(batch_size, n - start)])
    if not out:
        dim = model.feature_dim if return_features else model.num_classes
        return np.zeros((0, dim), np.float32)
    return np.concatenate(out)


def accuracy(variables, num_classes: int, x, y, batch_size: int = 1024) -> float:
    logits = _batched(FeatureCNN(num_classes), variables, _check_images(x), False, batch_size)
    return float(np.mean(logits.argmax(-1) == np.asarray(y)))


@dataclasses.dataclass
class FeatureNet:
    """A trained FeatureCNN: features() and distance() on NHWC float32 images in [0, 1]."""
    variables: Any
    num_classes: int
    image_shape: tuple[int, ...]
    test_accuracy: float
    path: pathlib.Path | None = None      # the cached msgpack file, where there is one
    info: dict = dataclasses.field(default_factory=dict)

    def features(self, images, batch_size: int = 1024) -> np.ndarray:
        """The 128-d penultimate (post-relu) activations, [E, 128] float32."""
        return _batched(FeatureCNN(self.num_classes), self.variables,
                        _check_images(images, self.image_shape), True, batch_size)

    def distance(self, generated, real, batch_size: int = 1024) -> float:
        """frechet_distance between the features of `generated` and of `real` images."""
        return frechet_distance(self.features(generated, batch_size),
                                self.features(real, batch_size))


def _digest(arrays, recipe: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(recipe, sort_keys=True).encode())
    for name in ("x_train", "y_train", "x_eval", "y_eval"):
        a = np.ascontiguousarray(getattr(arrays, name))
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def cache_path(dataset_name: str, arrays, seed: int = 0, steps: int = DEFAULT_STEPS,
               batch_size: int = DEFAULT_BATCH_SIZE,
               learning_rate: float = DEFAULT_LEARNING_RATE) -> pathlib.Path:
    """Where load_or_train keeps the net for this dataset and recipe (the .json sits beside)."""
    recipe = dict(arch_version=ARCH_VERSION, image_shape=list(arrays.x_train.shape[1:]),
                  num_classes=int(arrays.num_classes), feature_dim=FEATURE_DIM, seed=seed,
                  steps=steps, batch_size=batch_size, learning_rate=learning_rate)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset_name)
    return cache_dir() / "feature_nets" / f"{safe}_{_digest(arrays, recipe)}.msgpack"


def load_or_train(dataset_name: str, arrays, seed: int = 0, steps: int = DEFAULT_STEPS,
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  learning_rate: float = DEFAULT_LEARNING_RATE) -> FeatureNet:
    """The feature net for `arrays` (a fmjax.data.arrays.Arrays: x_train, y_train, x_eval,
    y_eval, num_classes; images NHWC in [0, 1]): loaded from the cache, or trained with
    train_classifier, evaluated on the eval split, and stored (both files written atomically)."""
    image_shape = tuple(int(d) for d in arrays.x_train.shape[1:])
    num_classes = int(arrays.num_classes)
    path = cache_path(dataset_name, arrays, seed, steps, batch_size, learning_rate)
    meta_path = path.with_suffix(".json")
    template = FeatureCNN(num_classes).init(jax.random.key(0),
                                            jnp.zeros((1, *image_shape), jnp.float32))
    if path.exists() and meta_path.exists():
        info = json.loads(meta_path.read_text())
        variables = flax.serialization.from_bytes(jax.device_get(template), path.read_bytes())
        return FeatureNet(variables, num_classes, image_shape, float(info["test_accuracy"]),
                          path, info)
    start = time.perf_counter()
    variables = train_classifier(arrays.x_train, arrays.y_train, num_classes, seed=seed,
                                 steps=steps, batch_size=batch_size, learning_rate=learning_rate)
    train_seconds = time.perf_counter() - start
    test_accuracy = accuracy(variables, num_classes, arrays.x_eval, arrays.y_eval)
    info = dict(dataset=dataset_name, test_accuracy=test_accuracy, num_eval=len(arrays.x_eval),
                num_train=len(arrays.x_train), arch_version=ARCH_VERSION,
                image_shape=list(image_shape), num_classes=num_classes, seed=seed, steps=steps,
                batch_size=batch_size, learning_rate=learning_rate,
                train_seconds=round(train_seconds, 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(meta_path, (json.dumps(info, indent=1) + "\n").encode())
    write_atomic(path, flax.serialization.to_bytes(variables))   # last: its presence = complete
    return FeatureNet(variables, num_classes, image_shape, test_accuracy, path, info)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ddof=1) covariance of [E, F] features, in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need [E >= 2, F] features; got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance_from_moments(mu_a, sigma_a, mu_b, sigma_b, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), as the standard FID code computes
    it: scipy.linalg.sqrtm of the product; where that is not finite or inaccurate (a singular
    product), retry with eps*I added to both covariances; drop the imaginary part that rounding
    leaves (an imaginary diagonal larger than 1e-3 is an error). Tiny negative results from
    rounding are clipped to 0."""
    mu_a = np.atleast_1d(np.asarray(mu_a, np.float64))
    mu_b = np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a = np.atleast_2d(np.asarray(sigma_a, np.float64))
    sigma_b = np.atleast_2d(np.asarray(sigma_b, np.float64))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or \
            sigma_a.shape != (len(mu_a), len(mu_a)):
        raise ValueError(f"mismatched moments: {mu_a.shape} {sigma_a.shape} / {mu_b.shape} "
                         f"{sigma_b.shape}")
    diff = mu_a - mu_b

    def sqrt_product(sa, sb):
        product = sa @ sb
        with warnings.catch_warnings():   # "Matrix is singular": checked below, retried with eps
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            root = scipy.linalg.sqrtm(product)
        ok = np.isfinite(root).all()
        if ok:
            scale = max(np.linalg.norm(product), 1e-300)
            ok = np.linalg.norm(root @ root - product) / scale < 1e-4
        return root, ok

    covmean, ok = sqrt_product(sigma_a, sigma_b)
    if not ok or (np.iscomplexobj(covmean) and
                  not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)):
        offset = np.eye(len(mu_a)) * eps
        covmean, _ = sqrt_product(sigma_a + offset, sigma_b + offset)
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has an imaginary component "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean)
    if not np.isfinite(value):
        raise ValueError("Fréchet distance is not finite")
    return float(max(value, 0.0))


def frechet_distance(features_a, features_b, eps: float = 1e-6) -> float:
    """The Fréchet distance between Gaussians fitted to two [E, F] feature sets."""
    return frechet_distance_from_moments(*feature_statistics(features_a),
                                         *feature_statistics(features_b), eps=eps)
