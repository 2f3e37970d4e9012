"""Early stopping: the count (unit), a real run that stops, keeps its best checkpoint and exits 0,
and resumes (after a stop by num_steps, or a preemption at an eval) that end exactly where an
uninterrupted run ends."""

import signal

import jax
import ml_collections
import numpy as np
import pytest

from conftest import read_metrics, run_cli
from fmjax import checkpoint, configs
from fmjax.early_stopping import EarlyStopping
from fmjax.errors import Preempted
from fmjax.runtime.preemption import PreemptionWatch
from fmjax.train import train_and_evaluate
from test_train import final_params, model_metrics


def _es(**keys):
    return ml_collections.ConfigDict(dict(dict(metric="val/loss", mode="min", patience=2,
                                               min_delta=0.1), **keys))


def _run(es_config, values):
    state, states = EarlyStopping(), []
    for i, value in enumerate(values, 1):
        state = state.update(es_config, 10 * i, value)
        states.append(state)
    return states


def test_improvement_is_more_than_min_delta_and_patience_counts_evals():
    """min: 1.0 is the first best; 0.95 is not better by more than 0.1 (1 eval waited); 0.8 is
    (the count restarts); 0.75 and 0.78 are not: the second exhausts patience 2 at step 50."""
    states = _run(_es(), [1.0, 0.95, 0.8, 0.75, 0.78])
    assert [(s.best, s.best_step, s.evals_without_improvement, s.stopped_at) for s in states] == [
        (1.0, 10, 0, 0), (1.0, 10, 1, 0), (0.8, 30, 0, 0), (0.8, 30, 1, 0), (0.8, 30, 2, 50)]
    assert states[-1].message(_es()) == ("fmjax: early stopping at step 50: val/loss has not "
                                         "improved by more than 0.1 for 2 evals (best 0.8 at "
                                         "step 30)")
    maximise = _run(_es(metric="val/accuracy", mode="max", patience=1, min_delta=0.0),
                    [0.5, 0.6, 0.6])   # equal is no improvement
    assert [(s.best, s.stopped_at) for s in maximise] == [(0.5, 0), (0.6, 0), (0.6, 30)]
    nan_first = _run(_es(patience=3), [float("nan"), 2.0, float("nan")])
    assert [(s.best, s.evals_without_improvement) for s in nan_first][1:] == [(2.0, 0), (2.0, 1)]
    assert EarlyStopping.from_dict(states[3].to_dict()) == states[3]


# The shipped MNIST-1D MLP with a validation split; val/accuracy must rise by more than 1.0 to
# count as better, which it never can: the first eval is the best, each later one waits.
FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.data.validation_fraction=0.1",
         "--config.train.num_steps=1000", "--config.train.eval_every=20",
         "--config.train.log_every=10", "--config.train.steps_per_call=10",
         "--config.checkpoint.every=100", "--config.checkpoint.keep=1",
         "--config.checkpoint.best_metric=val/loss", "--config.checkpoint.best_mode=min",
         "--config.train.early_stopping.metric=val/accuracy",
         "--config.train.early_stopping.mode=max", "--config.train.early_stopping.patience=2",
         "--config.train.early_stopping.min_delta=1.0", "--noprogress"]


def test_a_run_stops_at_the_eval_that_exhausts_patience_and_a_resume_does_nothing(tmp_path):
    """Evals at 20 (the best), 40 and 60 (patience 2): stopped at 60 with a checkpoint there,
    the best val/loss checkpoint kept too, exit 0; the same command again runs no step."""
    proc = run_cli("train", "--workdir", tmp_path, *FLAGS)
    records = read_metrics(tmp_path)
    evals = {r["step"]: r for r in records if "val/accuracy" in r}
    assert sorted(evals) == [20, 40, 60] and records[-1]["step"] == 60
    best_acc = evals[20]["val/accuracy"]
    line = (f"fmjax: early stopping at step 60: val/accuracy has not improved by more than 1 "
            f"for 2 evals (best {best_acc:.4g} at step 20)")
    assert line in proc.stdout.splitlines(), proc.stdout
    best_loss = min(evals, key=lambda s: (evals[s]["val/loss"], s))
    assert set(checkpoint.read_only_manager(tmp_path).all_steps()) == {best_loss, 60}
    again = run_cli("train", "--workdir", tmp_path, *FLAGS)
    assert f"{line}; nothing more to run" in again.stdout.splitlines(), again.stdout
    assert read_metrics(tmp_path) == records
    assert set(checkpoint.read_only_manager(tmp_path).all_steps()) == {best_loss, 60}


def test_a_resume_counts_the_same_metric_and_says_its_own_count(tmp_path):
    """A run stopped at step 40 (patience 1) and re-run with patience 3 said 'for 3 evals' (it
    had waited 1); resumed with another metric, it compared val/loss values with the best
    val/accuracy. Now: the count it has, and another metric or mode is refused."""
    flags = [*FLAGS, "--config.train.num_steps=60", "--config.train.early_stopping.patience=1"]
    run_cli("train", "--workdir", tmp_path, *flags)
    records = read_metrics(tmp_path)
    best = next(r for r in records if r["step"] == 20 and "val/accuracy" in r)["val/accuracy"]
    again = run_cli("train", "--workdir", tmp_path, *flags,
                    "--config.train.early_stopping.patience=3")
    assert [line for line in again.stdout.splitlines() if "early stopping" in line] == [
        "fmjax: early stopping at step 40: val/accuracy has not improved by more than 1 for 1 "
        f"evals (best {best:.4g} at step 20); nothing more to run"]
    other = run_cli("train", "--workdir", tmp_path, *flags,
                    "--config.train.early_stopping.metric=val/loss",
                    "--config.train.early_stopping.mode=min", check=False)
    assert (other.returncode, other.stderr) == (2, (
        "fmjax: error: config.train.early_stopping.metric='val/loss' (mode 'min'), but the "
        "checkpoint at step 40 counted 'val/accuracy' (mode 'max'); resume with those, or start "
        "a new --workdir\n"))
    assert read_metrics(tmp_path) == records


def _config(num_steps: int):
    """An MLP with dropout on MNIST-1D that early stopping ends at step 80 (patience 3 with an
    improvement it never reaches: evals 20 best, 40, 60, 80 waited)."""
    return configs.experiment(
        model=dict(name="mlp", dropout_rate=0.2), data=dict(name="mnist1d",
                                                            validation_fraction=0.1),
        train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=500, log_every=10,
                   eval_every=20, steps_per_call=10,
                   early_stopping=dict(metric="val/loss", mode="min", patience=3,
                                       min_delta=10.0)),
        optimizer=dict(name="adam", learning_rate=3e-3),
        checkpoint=dict(every=20, keep=5, best_metric="val/loss", best_mode="min"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    train_and_evaluate(_config(1000), workdir, show_progress=False)
    return workdir


def _assert_same_run(resumed, straight, skip_step=None):
    jax.tree.map(np.testing.assert_array_equal, final_params(straight), final_params(resumed))
    assert [r for r in model_metrics(resumed) if r["step"] != skip_step] == \
        model_metrics(straight)
    assert read_metrics(straight)[-1]["step"] == 80


def test_a_run_stopped_by_num_steps_and_resumed_stops_where_an_uninterrupted_one_does(
        tmp_path, straight):
    """Stopped at 45 (after the evals at 20 and 40: one waited; its last eval at 45 is off the
    eval grid and does not count), resumed with the full num_steps: the same stop at 80."""
    train_and_evaluate(_config(45), tmp_path, show_progress=False)
    assert checkpoint.read_only_manager(tmp_path).latest_step() == 45
    train_and_evaluate(_config(1000), tmp_path, show_progress=False)
    _assert_same_run(tmp_path, straight, skip_step=45)


def test_a_preemption_at_an_eval_saves_that_evals_count(tmp_path, straight, monkeypatch):
    """SIGTERM during the device call that ends at the eval of step 60: the checkpoint holds
    the count after that eval, so the resumed run stops at 80 like the uninterrupted one."""
    calls = []

    def requested(self):
        calls.append(1)
        if len(calls) == 6:   # device calls of 10 steps: the sixth ends at step 60
            self.signum = signal.SIGTERM
        return self.signum is not None

    with monkeypatch.context() as patch:
        patch.setattr(PreemptionWatch, "requested", requested)
        with pytest.raises(Preempted, match="at step 60"):
            train_and_evaluate(_config(1000), tmp_path, show_progress=False)
    manager = checkpoint.read_only_manager(tmp_path)
    assert manager.latest_step() == 60
    assert checkpoint.read_progress(manager, 60)["early_stopping"] == {
        "best": pytest.approx(read_metrics(straight)[1]["val/loss"]), "best_step": 20,
        "evals_without_improvement": 2, "stopped_at": 0, "metric": "val/loss", "mode": "min"}
    train_and_evaluate(_config(1000), tmp_path, show_progress=False)
    _assert_same_run(tmp_path, straight)
