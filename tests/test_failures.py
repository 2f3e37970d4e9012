"""Training never silently continues on NaN (`stop`, or `skip` with a counter and a limit), and
fmjax trains without TensorFlow installed."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, read_metrics, run_cli
from fmjax import checkpoint, runs
from fmjax.errors import NonFiniteLoss
from fmjax.train import train_and_evaluate


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    # From step 20 the learning rate is multiplied by 1e15: the parameters blow up within steps.
    proc = run_cli("train", "--config", "experiments/mnist1d/mlp.py", "--workdir", tmp_path,
                   "--config.optimizer.name=sgd", "--config.optimizer.schedule=step",
                   "--config.optimizer.decay_boundaries=(20,)",
                   "--config.optimizer.decay_factor=1e15", "--config.train.num_steps=60",
                   "--config.train.steps_per_call=1", "--config.train.log_every=1",
                   "--config.train.eval_every=10", "--config.checkpoint.every=10", "--noprogress",
                   check=False)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "non-finite loss" in message and "at step 2" in message, message
    bad_step = int(message.split("at step ")[1].split(";")[0])
    assert 20 < bad_step < 30
    assert checkpoint.read_only_manager(tmp_path).all_steps() == [10, 20]
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records][:3] == [1, 2, 3]
    assert records[-1]["step"] == bad_step and not np.isfinite(records[-1]["train/loss"])
    assert all(np.isfinite(r["train/loss"]) for r in records[:-1])


def _poison_steps(monkeypatch, steps):
    """Training batches of these steps get NaN inputs (a corrupt record, a bad sensor, ...)."""
    from fmjax.data.arrays import ArrayPipeline
    clean = ArrayPipeline.train_batch

    def train_batch(self, step, global_batch_size):
        batch = clean(self, step, global_batch_size)
        if step in steps:
            batch["inputs"] = np.full_like(batch["inputs"], np.nan)
        return batch
    monkeypatch.setattr(ArrayPipeline, "train_batch", train_batch)


def test_nan_policy_skip_drops_bad_updates_counts_them_and_trains_on(tmp_path, small_config,
                                                                   monkeypatch):
    """Steps 24 and 25 (0-based batches 23, 24) see NaN inputs: with nan_policy='skip' their
    updates are dropped, `train/skipped_steps` counts 2, and the model still learns."""
    _poison_steps(monkeypatch, {23, 24})
    small_config.train.update(nan_policy="skip", num_steps=200, eval_every=200, log_every=10)
    small_config.checkpoint.every = 100
    final = train_and_evaluate(small_config, tmp_path, show_progress=False)
    records = read_metrics(tmp_path)
    assert [r["train/skipped_steps"] for r in records[:4]] == [0, 0, 2, 2]
    assert records[-1]["train/skipped_steps"] == 2
    assert all(np.isfinite(r["train/loss"]) for r in records if r["step"] != 30)
    assert final["eval/accuracy"] > 0.3          # chance: 0.1
    run = runs.load(tmp_path)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(run.params))


def test_nan_policy_skip_stops_after_max_nan_skips(tmp_path, small_config, monkeypatch):
    _poison_steps(monkeypatch, set(range(23, 60)))
    small_config.train.update(nan_policy="skip", max_nan_skips=3)
    with pytest.raises(NonFiniteLoss, match="4 steps skipped .* by step 27, more than "
                                            "config.train.max_nan_skips=3"):
        train_and_evaluate(small_config, tmp_path, show_progress=False)
    assert checkpoint.read_only_manager(tmp_path).all_steps() == []   # every=30: none yet


def test_trains_without_tensorflow(tmp_path):
    """TensorFlow and grain are needed only for TFDS: block their import and train an MNIST-1D
    model."""
    script = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"          # any `import tensorflow` now fails
        "sys.modules['tensorflow_datasets'] = None\n"
        "sys.modules['grain'] = None\n"
        "from fmjax import configs\n"
        "from fmjax.train import train_and_evaluate\n"
        "c = configs.experiment(model=dict(name='mlp'), data=dict(name='mnist1d'),\n"
        "    train=dict(num_steps=20, batch_size=32, log_every=10, eval_every=20,\n"
        "               steps_per_call=10), checkpoint=dict(every=20))\n"
        f"m = train_and_evaluate(c, {str(tmp_path)!r}, show_progress=False)\n"
        "assert m['eval/accuracy'] > 0.1, m\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_skipped_step_leaves_parameters_and_optimizer_state_bit_identical(small_config):
    """nan_policy='skip' on a NaN batch: the step counts (the data moves on), the update does
    not exist."""
    from fmjax import sharding, state as state_lib, train
    from fmjax.step import make_train_call
    small_config.train.update(nan_policy="skip", steps_per_call=1)
    exp = train.prepare(small_config)
    state = state_lib.init_state(exp.task, exp.tx, 0, exp.mesh, exp.rules, exp.abstract_state)
    before = jax.device_get(state)              # the call donates `state`
    batch = exp.pipeline.train_batch(0, small_config.train.batch_size)
    batch["inputs"] = np.full_like(batch["inputs"], np.nan)
    call = make_train_call(exp.task, exp.tx, exp.lr_schedule, small_config, exp.mesh,
                           exp.state_shardings)
    with jax.set_mesh(exp.mesh):
        after, metrics = call(state, sharding.global_batch(
            jax.tree.map(lambda x: x[None], batch), exp.mesh, 1))
    after = jax.device_get(after)
    assert int(after.step) == 1 and int(after.skipped_steps) == 1
    assert int(metrics["skipped_steps"][0]) == 1 and not np.isfinite(metrics["loss"][0])
    jax.tree.map(np.testing.assert_array_equal, (after.params, after.opt_state),
                 (before.params, before.opt_state))
