"""eval/feature_distance: the Fréchet distance itself, a feature net trained on scikit-learn digits,
and the feature-net cache."""

import json

import numpy as np
import pytest
import scipy.ndimage

from fmjax.data.arrays import Arrays
from fmjax.metrics import feature_distance as fd


def _random_covariance(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _reference_distance(mu_a, sa, mu_b, sb):
    """Independent route: Tr((S_a S_b)^(1/2)) = sum of sqrt(eig(S_a^(1/2) S_b S_a^(1/2)))."""
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(w)) @ v.T
    eig = np.linalg.eigvalsh(root_a @ sb @ root_a)
    diff = mu_a - mu_b
    return diff @ diff + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    # Commuting covariances (same eigenbasis): ||dmu||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = fd.frechet_distance_from_moments(mu_a, (q * a) @ q.T, mu_b, (q * b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)
    # Non-commuting covariances against the eigenvalue route.
    sa, sb = _random_covariance(rng, 16), _random_covariance(rng, 16)
    mu_a, mu_b = rng.normal(size=16), rng.normal(size=16)
    assert fd.frechet_distance_from_moments(mu_a, sa, mu_b, sb) == pytest.approx(
        _reference_distance(mu_a, sa, mu_b, sb), rel=1e-7)
    # 1-d: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
    assert fd.frechet_distance_from_moments([0.0], [[1.0]], [2.0], [[9.0]]) == pytest.approx(8.0)


def test_frechet_distance_from_samples():
    rng = np.random.default_rng(1)
    d, n = 4, 200_000
    sa, sb = _random_covariance(rng, d), _random_covariance(rng, d)
    mu_a, mu_b = np.zeros(d), np.full(d, 0.5)
    xa = rng.multivariate_normal(mu_a, sa, size=n)
    xb = rng.multivariate_normal(mu_b, sb, size=n)
    expected = _reference_distance(mu_a, sa, mu_b, sb)
    got = fd.frechet_distance(xa, xb)
    assert got == pytest.approx(expected, rel=0.03)
    assert fd.frechet_distance(xb, xa) == pytest.approx(got, rel=1e-6)          # symmetric
    assert fd.frechet_distance(xa, xa) == pytest.approx(0.0, abs=1e-6)           # identical
    # Singular covariances (constant and duplicated columns, like dead relu units) stay finite.
    xs = np.concatenate([xa[:1000], np.zeros((1000, 3)), xa[:1000, :1]], axis=1)
    assert fd.frechet_distance(xs, xs) == pytest.approx(0.0, abs=1e-6)
    ys = np.concatenate([xb[:1000], np.zeros((1000, 3)), xb[:1000, :1]], axis=1)
    assert np.isfinite(fd.frechet_distance(xs, ys)) and fd.frechet_distance(xs, ys) > 0
    with pytest.raises(ValueError):
        fd.frechet_distance(xa[:, :3], xb)


@pytest.fixture(scope="module")
def digits():
    from fmjax.data.digits import Digits
    arrays = Digits().pipeline(0).arrays
    return arrays, fd.load_or_train("digits", arrays)   # cached under FMJAX_CACHE_DIR


def test_digits_feature_net(digits):
    arrays, net = digits
    assert net.test_accuracy > 0.9, net.test_accuracy
    x = arrays.x_eval
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    half_a, half_b = x[perm[: len(x) // 2]], x[perm[len(x) // 2:]]

    features = net.features(x)
    assert features.shape == (len(x), fd.FEATURE_DIM) and features.dtype == np.float32
    np.testing.assert_allclose(net.features(x, batch_size=7), features, rtol=1e-5, atol=1e-5)

    real = net.distance(half_a, half_b)
    noise = net.distance(rng.uniform(size=half_b.shape).astype(np.float32), half_a)
    blurred = net.distance(scipy.ndimage.gaussian_filter(half_b, sigma=(0, 1, 1, 0)), half_a)
    pixel_perm = rng.permutation(64)
    shuffled = net.distance(half_b.reshape(-1, 64)[:, pixel_perm].reshape(half_b.shape), half_a)
    print(f"digits feature net: test accuracy {net.test_accuracy:.4f}; distances (180 vs 180): "
          f"real/real {real:.3f}, real/noise {noise:.3f}, real/blurred {blurred:.3f}, "
          f"real/shuffled {shuffled:.3f}")
    assert 5 * real < noise
    assert 3 * real < blurred
    assert 3 * real < shuffled
    with pytest.raises(ValueError, match="trained on"):
        net.features(np.zeros((2, 28, 28, 1), np.float32))


def _small_arrays(offset: int = 0) -> Arrays:
    from fmjax.data.digits import Digits
    a = Digits().pipeline(0).arrays
    return Arrays(a.x_train[offset:offset + 200], a.y_train[offset:offset + 200],
                  a.x_eval[:50], a.y_eval[:50], 10)


def test_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FMJAX_CACHE_DIR", str(tmp_path))
    calls = []
    real_train = fd.train_classifier

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(fd, "train_classifier", counting_train)
    arrays = _small_arrays()
    net = fd.load_or_train("tiny digits", arrays, steps=20, batch_size=32)
    assert len(calls) == 1
    assert net.path.parent == tmp_path / "feature_nets"
    assert net.path.name.startswith("tiny_digits_") and net.path.suffix == ".msgpack"
    meta = json.loads(net.path.with_suffix(".json").read_text())
    assert meta["test_accuracy"] == net.test_accuracy
    assert sorted(p.name for p in net.path.parent.iterdir()) == sorted(
        [net.path.name, net.path.with_suffix(".json").name])   # no temporary files left
    probe = arrays.x_eval

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the net is cached")

    monkeypatch.setattr(fd, "train_classifier", no_training)
    again = fd.load_or_train("tiny digits", arrays, steps=20, batch_size=32)
    assert again.path == net.path and again.test_accuracy == net.test_accuracy
    np.testing.assert_array_equal(again.features(probe), net.features(probe))

    # A different dataset (other training images) or recipe gets its own net.
    monkeypatch.setattr(fd, "train_classifier", counting_train)
    other = fd.load_or_train("tiny digits", _small_arrays(offset=200), steps=20, batch_size=32)
    assert len(calls) == 2 and other.path != net.path
    changed = _small_arrays()
    changed.x_train = changed.x_train.copy()
    changed.x_train[0, 0, 0, 0] += 0.5
    assert fd.cache_path("tiny digits", changed, steps=20, batch_size=32) != net.path
    assert fd.cache_path("tiny digits", arrays, steps=21, batch_size=32) != net.path

    # Training is deterministic given the seed: a fresh cache trains the same parameters.
    monkeypatch.setenv("FMJAX_CACHE_DIR", str(tmp_path / "fresh"))
    fresh = fd.load_or_train("tiny digits", arrays, steps=20, batch_size=32)
    assert len(calls) == 3
    assert fresh.path.read_bytes() == net.path.read_bytes()
