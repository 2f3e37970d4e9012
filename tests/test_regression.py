"""The regression task: its metrics equal scikit-learn's, the shipped diabetes experiment beats a
mean predictor as a linear model does, `fmjax eval` reproduces it, and options or data of another
task are refused with one line."""

import json
import re

import jax
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression

from conftest import experiment_config, read_metrics, run_cli
from fmjax import checkpoint, configs, data
from fmjax.data import DataInfo
from fmjax.errors import UserError
from fmjax.metrics.regression import regression_metrics
from fmjax.tasks import Regression
from fmjax.train import prepare, train_and_evaluate

DIABETES = "experiments/regression/diabetes.py"
NAMES = ("eval/loss", "eval/mse", "eval/mae", "eval/r2")


@pytest.mark.parametrize("shape", [(200,), (200, 1), (200, 3)])
def test_metrics_match_sklearn(shape):
    rng = np.random.default_rng(0)
    targets = rng.normal(5.0, 3.0, size=shape)
    preds = targets + rng.normal(0.0, 2.0, size=shape) * np.linspace(0.5, 1.5, shape[-1])
    ours = regression_metrics(preds, targets)
    assert ours["loss"] == ours["mse"] == pytest.approx(skm.mean_squared_error(targets, preds))
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(targets, preds))
    assert ours["r2"] == pytest.approx(skm.r2_score(targets, preds))   # uniform_average
    assert 0.2 < ours["r2"] < 0.9


def test_a_constant_output_scores_like_sklearn():
    """An output whose targets never vary: R² 1 when predicted exactly, else 0 (no NaN)."""
    targets = np.stack([np.full(5, 2.0), np.arange(5.0), np.full(5, 7.0)], axis=1)
    preds = targets + np.array([0.0, 0.5, 1.0])
    assert regression_metrics(preds, targets)["r2"] == pytest.approx(
        skm.r2_score(targets, preds)) == pytest.approx((1.0 + 1 - 1.25 / 10 + 0.0) / 3)


def test_vector_targets_train_standardised_and_report_their_own_units():
    """Two outputs of different scales: the gradient's loss is the MSE of standardised targets,
    train/loss and eval the MSE in the targets' units (each output's error times its std)."""
    info = DataInfo(0, (3,), 8, 8, target_mean=(1.0, -50.0), target_std=(2.0, 10.0))
    config = configs.experiment(task="regression", model=dict(name="mlp", num_layers=0),
                                data=dict(name="diabetes"))
    task = Regression(config, info)
    params = task.init(jax.random.key(0))["params"]
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.normal(size=(8, 3)).astype(np.float32),
             "labels": (rng.normal(size=(8, 2)) * [2, 10] + [1, -50]).astype(np.float32)}
    raw_BO = np.asarray(task.model.apply({"params": params}, batch["inputs"]))
    preds_BO = raw_BO * [2, 10] + [1, -50]
    loss, (metrics, _) = task.loss_fn(params, {}, batch, jax.random.key(1))
    standardised_BO = (batch["labels"] - [1, -50]) / [2, 10]
    assert float(loss) == pytest.approx(((raw_BO - standardised_BO) ** 2).mean(), rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(
        skm.mean_squared_error(batch["labels"], preds_BO), rel=1e-5)
    outputs = {k: np.asarray(v) for k, v in task.eval_outputs(params, {}, batch).items()}
    np.testing.assert_allclose(outputs["preds"], preds_BO, rtol=1e-5, atol=1e-4)
    assert task.eval_metrics(outputs)["r2"] == pytest.approx(
        skm.r2_score(batch["labels"], preds_BO), abs=1e-5)


def test_features_are_standardised_with_the_training_split_only():
    config = experiment_config(DIABETES)
    config.data.validation_fraction = 0.2
    pipeline = data.build_pipeline(config.data, seed=0)
    a, info = pipeline.arrays, pipeline.info
    assert (info.num_train, info.num_val, info.num_eval) == (282, 71, 89)
    np.testing.assert_allclose(a.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a.x_train.std(0), 1, atol=1e-5)
    assert np.abs(a.x_val.mean(0)).max() > 0.05 and np.abs(a.x_eval.mean(0)).max() > 0.05
    assert info.target_mean == pytest.approx((a.y_train.mean(),))
    assert info.target_std == pytest.approx((a.y_train.std(),))


def test_a_feature_constant_over_a_tiny_training_split_stays_finite(tmp_path):
    """validation_fraction=0.99 leaves 3 training patients, all of one sex."""
    config = experiment_config(DIABETES)
    config.data.validation_fraction = 0.99
    config.train.update(num_steps=2, eval_every=2, log_every=1, steps_per_call=1)
    arrays = data.build_pipeline(config.data, seed=0).arrays
    assert arrays.x_train.shape[0] == 3 and np.isfinite(arrays.x_val).all()
    assert arrays.x_train[:, 1].std() == 0   # sex: constant here, so left unscaled
    final = train_and_evaluate(config, tmp_path, show_progress=False)
    assert np.isfinite(final["val/mse"]) and np.isfinite(final["eval/r2"])


@pytest.fixture(scope="module")
def diabetes_run(tmp_path_factory):
    """The shipped experiment, its real settings (1000 steps, about 2 s), and its final metrics."""
    workdir = tmp_path_factory.mktemp("diabetes")
    final = train_and_evaluate(experiment_config(DIABETES), workdir, show_progress=False)
    return workdir, final


def test_the_experiment_reaches_a_linear_models_r2_and_beats_the_mean(diabetes_run):
    workdir, final = diabetes_run
    arrays = data.build_pipeline(experiment_config(DIABETES).data, 0).arrays
    linear = LinearRegression().fit(arrays.x_train, arrays.y_train).predict(arrays.x_eval)
    assert skm.r2_score(arrays.y_eval, linear) == pytest.approx(0.4526, abs=1e-3)
    mean_mse = skm.mean_squared_error(arrays.y_eval, np.full(89, arrays.y_train.mean()))
    assert final["eval/r2"] >= 0.40 and final["eval/mse"] <= 0.65 * mean_mse, final
    logged = [r for r in read_metrics(workdir) if "eval/r2" in r]
    assert [r["step"] for r in logged] == [500, 1000]
    assert final == {k: logged[-1][k] for k in NAMES}
    info = json.loads((workdir / "data_info.json").read_text())
    assert (info["num_classes"], info["num_train"], info["num_eval"]) == (0, 353, 89)
    assert info["target_mean"] == pytest.approx([arrays.y_train.mean()], rel=1e-6)


def test_eval_of_the_saved_run_reports_the_same_numbers(diabetes_run):
    workdir, final = diabetes_run
    reported = json.loads(run_cli("eval", "--workdir", workdir).stdout.splitlines()[-1])
    assert reported == {"step": 1000, **{k: pytest.approx(final[k], rel=1e-6) for k in NAMES}}


def test_classifier_plots_of_a_regression_run_are_one_error_line(diabetes_run, tmp_path):
    workdir, _ = diabetes_run
    proc = run_cli("plot", workdir, "--kind", "roc", "--out", tmp_path / "roc.png", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"fmjax: error: {workdir} holds a 'regression' run with model 'mlp'; "
                           "roc plots need a classifier (task 'classification')\n")
    assert list(tmp_path.iterdir()) == []


def test_selection_reads_the_validation_split_in_either_direction(tmp_path):
    """Best checkpoint by the lowest val/mse; early stopping by val/r2 (maximised) stops once it
    has not improved by min_delta for `patience` evals."""
    config = experiment_config(DIABETES)
    config.data.validation_fraction = 0.2
    config.train.update(num_steps=500, eval_every=50, steps_per_call=50)
    config.train.early_stopping.update(metric="val/r2", mode="max", patience=2, min_delta=10.0)
    config.checkpoint.update(every=500, best_metric="val/mse", best_mode="min")
    train_and_evaluate(config, tmp_path, show_progress=False)
    evals = {r["step"]: r for r in read_metrics(tmp_path) if "val/r2" in r}
    assert sorted(evals) == [50, 100, 150]   # stopped: 2 evals without a gain of 10 in R²
    best = min(evals, key=lambda s: evals[s]["val/mse"])
    assert set(checkpoint.read_only_manager(tmp_path).all_steps()) == {best, 150}
    assert all(r["val/r2"] != r["eval/r2"] and r["val/r2"] > 0 for r in evals.values())


@pytest.mark.parametrize("change, message", [
    (dict(task_options=dict(mixup_alpha=0.2)),
     "unknown key config.task_options.mixup_alpha for task 'regression' (known: none)"),
    (dict(checkpoint=dict(best_metric="val/accuracy")),
     "config.checkpoint.best_metric='val/accuracy' is not a metric of task 'regression' (it "
     "reports: loss, mse, mae, r2); use one of: val/loss, val/mse, val/mae, val/r2"),
    (dict(task="classification"),
     "task 'classification' needs class labels, but data 'diabetes' has real-valued targets; "
     "use task='regression'"),
    (dict(data=dict(name="digits")),
     "task 'regression' needs real-valued targets, but data 'digits' has class labels "
     "(regression data: diabetes)"),
])
def test_another_tasks_option_metric_or_data_is_one_user_error(change, message):
    config = experiment_config(DIABETES).to_dict()
    config["data"]["validation_fraction"] = 0.2
    for section, values in change.items():
        config[section] = values if section == "data" else (
            {**config[section], **values} if isinstance(values, dict) else values)
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        prepare(configs.experiment(**config))
