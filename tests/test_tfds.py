"""TFDS image classification read by index (`tfds.data_source`), under `tfds.testing.mock_data`
(never downloads)."""

import jax
import numpy as np
import pytest

from fmjax import configs
from fmjax.train import train_and_evaluate
from conftest import mock_tfds, read_metrics
from test_train import final_params, model_metrics


def tfds_config(num_steps):
    return configs.experiment(
        model=dict(name="cnn2d", features=(8, 16), hidden_size=32),
        data=dict(name="tfds", dataset="mnist", download=False, crop_padding=2),
        train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=100, log_every=5,
                   eval_every=10, steps_per_call=5),
        optimizer=dict(name="adam", learning_rate=1e-3),
        checkpoint=dict(every=10, keep=3))


@pytest.fixture(autouse=True)
def mock_mnist():
    with mock_tfds(num_examples=200):
        yield


def test_tfds_pipeline_trains_and_evaluates(tmp_path):
    final = train_and_evaluate(tfds_config(20), tmp_path, show_progress=False)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert all(np.isfinite(r["train/loss"]) for r in records)
    assert 0.0 <= final["eval/accuracy"] <= 1.0 and np.isfinite(final["eval/loss"])


def test_tfds_resume_sees_the_same_batches(tmp_path):
    """The batch of a step is read by index: resume is bit-exact."""
    train_and_evaluate(tfds_config(20), tmp_path / "straight", show_progress=False)
    train_and_evaluate(tfds_config(10), tmp_path / "resumed", show_progress=False)
    train_and_evaluate(tfds_config(20), tmp_path / "resumed", show_progress=False)
    jax.tree.map(np.testing.assert_array_equal,
                 final_params(tmp_path / "straight"),
                 final_params(tmp_path / "resumed"))
    assert model_metrics(tmp_path / "straight") == model_metrics(tmp_path / "resumed")


def test_generative_model_on_tfds_measures_feature_distance(tmp_path, monkeypatch):
    """A VAE on TFDS mnist reaches its first eval: the feature-distance classifier reads the
    TFDS training split into memory (training reads it by index). The classifier's quality
    is not the point here: it trains 20 steps, not its 80 s default."""
    import functools
    from conftest import experiment_config
    from fmjax.metrics import feature_distance
    monkeypatch.setenv("FMJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(feature_distance, "load_or_train",
                        functools.partial(feature_distance.load_or_train, steps=20))
    config = experiment_config("experiments/mnist/vae.py")
    config.data.update(download=False)
    config.train.update(num_steps=10, batch_size=20, eval_batch_size=100, log_every=5,
                        eval_every=10, steps_per_call=5)
    config.checkpoint.every = 10
    final = train_and_evaluate(config, tmp_path / "vae", show_progress=False)
    assert np.isfinite(final["eval/feature_distance"]) and final["eval/feature_distance"] > 0


def test_tfds_validation_split_is_read_by_index_out_of_the_training_split():
    """validation_fraction=0.25 of the 200 mock training records: 50 held out by
    validation_seed (the same for every train.seed), never in a training batch, read into memory;
    an eval split named `validation` lets model selection read eval/*."""
    from fmjax import data
    config = tfds_config(10)
    config.data.validation_fraction = 0.25
    pipelines = [data.build_pipeline(config.data, seed) for seed in (0, 1)]
    info = pipelines[0].info
    assert (info.num_train, info.num_val) == (150, 50)
    np.testing.assert_array_equal(pipelines[0].eval_arrays.x_val, pipelines[1].eval_arrays.x_val)
    val_index = np.setdiff1d(np.arange(200), pipelines[0].train_index)
    assert len(val_index) == 50
    for pipeline in pipelines:
        read = np.concatenate([pipeline.train_index[pipeline.order[
            np.arange(step * 32, (step + 1) * 32)]] for step in range(10)])   # 2+ epochs
        assert set(read) == set(pipeline.train_index)
    x_val = pipelines[0].val_examples(np.arange(50))["inputs"]
    expected = pipelines[0].source.scale(np.stack([
        ex["image"] for ex in pipelines[0].train.__getitems__([int(i) for i in val_index])]))
    np.testing.assert_array_equal(x_val, expected)
    assert configs.selection_metrics(config)[0] == "val/loss"
    config.data.update(validation_fraction=0.0, eval_split="validation[:50%]")
    assert configs.selection_metrics(config)[0] == "eval/loss"
