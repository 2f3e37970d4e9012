"""The train loop learns, and its knobs (grad accumulation, fused steps, resume) change nothing
they should not."""

import jax
import numpy as np
import pytest

from fmjax import checkpoint, configs, runs, train
from fmjax.metrics.writers import PERF_PREFIX
from fmjax.train import train_and_evaluate
from conftest import read_metrics


def final_params(workdir):
    """The parameters of the newest checkpoint in `workdir`, as numpy arrays."""
    return jax.tree.map(np.asarray, runs.load(workdir).params)


def model_metrics(workdir):
    return [{k: v for k, v in r.items() if not k.startswith(PERF_PREFIX)} for r in read_metrics(workdir)]


@pytest.fixture
def call_lengths(monkeypatch):
    """The number of steps of every device call the train loop makes, in order."""
    lengths = []
    make_train_call = train.make_train_call

    def recording_make_train_call(*args, **kwargs):
        call = make_train_call(*args, **kwargs)

        def recording_call(state, batches):
            lengths.append(jax.tree.leaves(batches)[0].shape[0])
            return call(state, batches)
        return recording_call
    monkeypatch.setattr(train, "make_train_call", recording_make_train_call)
    return lengths


@pytest.mark.parametrize("model, data, steps, min_accuracy, max_loss_ratio", [
    (dict(name="cnn1d"), dict(name="mnist1d"), 400, 0.6, 0.5),
    (dict(name="mlp", dropout_rate=0.1), dict(name="mnist1d"), 400, 0.3, 0.7),
    (dict(name="gru"), dict(name="mnist1d"), 400, 0.3, 0.7),
    (dict(name="lstm"), dict(name="mnist1d"), 400, 0.3, 0.7),
    (dict(name="logreg"), dict(name="mnist1d"), 400, 0.2, 0.9),
    (dict(name="cnn2d", features=(16, 32), hidden_size=64), dict(name="digits"), 200, 0.85, 0.3),
    (dict(name="resnet", stage_sizes=(1, 1), features=(16, 32)), dict(name="digits", crop_padding=1),
     200, 0.85, 0.3),
])
def test_models_learn(tmp_path, model, data, steps, min_accuracy, max_loss_ratio):
    """Eval accuracy beats chance (10%) by the stated margin, and the train loss (mean of the last
    three logs) ends below `max_loss_ratio` times ln(10), the loss of guessing uniformly."""
    config = configs.experiment(
        model=model, data=data,
        train=dict(num_steps=steps, batch_size=64, eval_batch_size=500, log_every=50,
                   eval_every=steps, steps_per_call=50),
        optimizer=dict(name="adam", learning_rate=5e-3), checkpoint=dict(every=steps))
    final = train_and_evaluate(config, tmp_path, show_progress=False)
    losses = [r["train/loss"] for r in read_metrics(tmp_path) if "train/loss" in r]
    assert final["eval/accuracy"] >= min_accuracy, final
    assert np.mean(losses[-3:]) < max_loss_ratio * np.log(10), losses


def test_grad_accumulation_matches_full_batch(tmp_path, small_config):
    """4 micro-batches of 8 give the same updates as one batch of 32 (float tolerance)."""
    small_config.optimizer.name = "sgd"
    small_config.train.num_steps = small_config.train.eval_every = 30
    train_and_evaluate(small_config, tmp_path / "full", show_progress=False)
    small_config.train.grad_accum_steps = 4
    train_and_evaluate(small_config, tmp_path / "accum", show_progress=False)
    full, accum = model_metrics(tmp_path / "full"), model_metrics(tmp_path / "accum")
    np.testing.assert_allclose([r["train/loss"] for r in accum], [r["train/loss"] for r in full],
                               rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 final_params(tmp_path / "accum"),
                 final_params(tmp_path / "full"))


def test_steps_per_call_does_not_change_training(tmp_path, small_config):
    """Fusing 10 steps into one device call gives bit-identical parameters to 1 step per call."""
    train_and_evaluate(small_config, tmp_path / "fused", show_progress=False)
    small_config.train.steps_per_call = 1
    train_and_evaluate(small_config, tmp_path / "single", show_progress=False)
    jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / "fused"),
                 final_params(tmp_path / "single"))
    assert model_metrics(tmp_path / "fused") == model_metrics(tmp_path / "single")


def test_resume_is_exact(tmp_path, call_lengths):
    """Stopped after 22 steps and resumed to 60: bit-identical parameters and identical metrics to
    an uninterrupted run, with dropout (per-step randomness) and a schedule in play. With
    steps_per_call=50 (what most experiments ship), 22 steps are less than one call, and the
    resumed run's first call is cut short to end on the eval and checkpoint at step 30."""
    def config(num_steps):
        c = configs.experiment(
            model=dict(name="mlp", dropout_rate=0.2), data=dict(name="mnist1d"),
            train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=200, log_every=10,
                       eval_every=30, steps_per_call=50),
            optimizer=dict(name="adamw", learning_rate=3e-3, schedule="step",
                           decay_boundaries=(20, 45), weight_decay=0.01),
            checkpoint=dict(every=30, keep=5))
        return c

    train_and_evaluate(config(22), tmp_path / "resumed", show_progress=False)   # "stops" at 22
    assert call_lengths == [22]
    assert checkpoint.read_only_manager(tmp_path / "resumed").all_steps() == [22]
    train_and_evaluate(config(60), tmp_path / "resumed", show_progress=False)   # same command again
    train_and_evaluate(config(60), tmp_path / "straight", show_progress=False)
    assert call_lengths[1:] == [8, 30] + [30, 30]
    jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / "straight"),
                 final_params(tmp_path / "resumed"))
    # the stopped run also evaluated its last step, 22
    resumed = [r for r in model_metrics(tmp_path / "resumed") if r["step"] != 22]
    assert resumed == model_metrics(tmp_path / "straight")


def test_best_checkpoint_is_kept_beside_the_last(tmp_path, small_config):
    """keep=1 plus best-by-val-accuracy: the best eval step survives even when it is not the
    last."""
    small_config.checkpoint.update(every=10, keep=1, best_metric="val/accuracy")
    small_config.data.validation_fraction = 0.1
    small_config.train.update(eval_every=10, num_steps=60)
    train_and_evaluate(small_config, tmp_path, show_progress=False)
    evals = {r["step"]: r["val/accuracy"] for r in read_metrics(tmp_path) if "val/accuracy" in r}
    best = max(evals, key=lambda s: (evals[s], -s))
    kept = set(checkpoint.read_only_manager(tmp_path).all_steps())
    assert kept == {best, 60}, (kept, evals)


def test_bfloat16_compute_keeps_float32_parameters(tmp_path, small_config):
    """model.dtype=bfloat16 computes in bf16, stores fp32 parameters, and still learns."""
    small_config.model.dtype = "bfloat16"
    small_config.train.update(num_steps=200, eval_every=200, log_every=50, steps_per_call=50)
    small_config.checkpoint.every = 200
    final = train_and_evaluate(small_config, tmp_path, show_progress=False)
    assert final["eval/accuracy"] > 0.4, final
    dtypes = {x.dtype for x in jax.tree.leaves(final_params(tmp_path))}
    assert dtypes == {np.dtype("float32")}


def test_log_eval_and_checkpoint_steps_need_not_be_multiples_of_steps_per_call(
        tmp_path, small_config, call_lengths):
    """Each happens at exactly its own steps: a call is cut short at an eval or checkpoint
    (one more compiled length here), and logged steps are read from inside a call. Parameters
    and metrics equal those of one step per call."""
    small_config.train.update(num_steps=40, steps_per_call=10, log_every=7, eval_every=15)
    small_config.checkpoint.update(every=25, keep=10)
    train_and_evaluate(small_config, tmp_path / "fused", show_progress=False)
    assert call_lengths == [10, 5, 10, 5, 10]
    records = read_metrics(tmp_path / "fused")
    assert [r["step"] for r in records] == [7, 14, 15, 21, 28, 30, 35, 40]
    assert [r["step"] for r in records if "eval/loss" in r] == [15, 30, 40]
    assert checkpoint.read_only_manager(tmp_path / "fused").all_steps() == [25, 40]
    small_config.train.steps_per_call = 1
    train_and_evaluate(small_config, tmp_path / "single", show_progress=False)
    assert model_metrics(tmp_path / "fused") == model_metrics(tmp_path / "single")
    jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / "fused"),
                 final_params(tmp_path / "single"))
