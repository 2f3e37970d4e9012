"""The validation split (`data.validation_fraction`), val/* metrics, and the model-selection rule:
nothing selects on a test split."""

import collections
import json

import numpy as np
import pytest

from conftest import experiment_config, read_metrics, run_cli
from fmjax import configs, data
from fmjax.errors import UserError
from fmjax.train import train_and_evaluate

MLP = "experiments/mnist1d/mlp.py"
GPT = "experiments/shakespeare/gpt_char.py"


def _rows(x_NF: np.ndarray) -> collections.Counter:
    return collections.Counter(row.tobytes() for row in x_NF.reshape(len(x_NF), -1))


@pytest.mark.parametrize("name, seed_key", [("mnist1d", "dataset_seed"), ("digits", "split_seed")])
def test_val_split_is_held_out_of_train_stratified_and_fixed_by_the_data_seed(name, seed_key):
    """10% of the training examples move to the validation split: no example in two splits,
    none lost, each class in proportion (within one example), the same for every train.seed,
    another for another data seed."""
    def arrays(train_seed, **data_keys):
        config = configs.experiment(model=dict(name="mlp"), data=dict(name=name, **data_keys))
        return data.build_pipeline(config.data, train_seed).arrays
    whole = arrays(0)
    held = arrays(0, validation_fraction=0.1)
    num = len(whole.y_train)
    assert (len(held.y_train), len(held.y_val)) == (num - round(0.1 * num), round(0.1 * num))
    assert _rows(held.x_train) + _rows(held.x_val) == _rows(whole.x_train)
    assert not (_rows(held.x_val) & _rows(whole.x_eval))
    np.testing.assert_array_equal(held.x_eval, whole.x_eval)
    per_class = np.bincount(whole.y_train, minlength=10)
    assert np.all(np.abs(np.bincount(held.y_val, minlength=10) - 0.1 * per_class) <= 1)
    again = arrays(7, validation_fraction=0.1)   # another train.seed: the same split
    np.testing.assert_array_equal(again.x_val, held.x_val)
    other = arrays(0, validation_fraction=0.1, **{seed_key: 5})
    assert _rows(other.x_val) != _rows(held.x_val)


def test_text_classification_holds_out_a_stratified_val_split(tmp_path):
    """30 'A' and 10 'B' training lines, a quarter held out: 10 of them, 8 'A' (stratified: 7.5),
    none of them trained on, the same whatever train.seed."""
    lines = [f"{'A' if i < 30 else 'B'}\tsentence number {i}" for i in range(40)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "eval.tsv").write_text("A\tanother one\nB\tand one more\n")
    config = configs.experiment(
        task="classification", model=dict(name="mlp"),
        data=dict(name="text_classification", train_path=str(tmp_path / "train.tsv"),
                  eval_path=str(tmp_path / "eval.tsv"), seq_len=24, validation_fraction=0.25))
    first, second = (data.build_pipeline(config.data, seed).arrays for seed in (0, 3))
    assert (len(first.y_train), len(first.y_val), int(np.sum(first.y_val == 0))) == (30, 10, 8)
    assert not (_rows(first.x_val) & _rows(first.x_train))
    np.testing.assert_array_equal(first.x_val, second.x_val)
    assert "val/accuracy" in configs.selection_metrics(config)


def test_without_a_fraction_the_training_set_is_whole():
    """The default keeps the published protocol: MNIST-1D's 4000 training examples."""
    info = data.build_pipeline(experiment_config(MLP).data, 0).info
    assert (info.num_train, info.num_val, info.num_eval) == (4000, 0, 1000)


def test_val_metrics_are_logged_at_every_eval_and_reported_by_fmjax_eval(tmp_path):
    """val/* beside eval/* at each eval, in metrics.jsonl and the return value; `fmjax eval`
    of the run reports the same numbers; the best checkpoint is chosen on val/accuracy."""
    config = experiment_config(MLP)
    config.data.validation_fraction = 0.1
    config.checkpoint.update(best_metric="val/accuracy", every=50, keep=1)
    config.train.update(num_steps=150, eval_every=50, log_every=50)
    final = train_and_evaluate(config, tmp_path, show_progress=False)
    evals = {r["step"]: r for r in read_metrics(tmp_path) if "eval/loss" in r}
    names = [f"{split}/{m}" for split in ("eval", "val")
             for m in ("loss", "accuracy", "precision_macro", "recall_macro", "f1_macro",
                       "roc_auc_ovr")]
    assert sorted(evals) == [50, 100, 150]
    assert all(sorted(k for k in r if k != "step" and "/" in k and not k.startswith(
        ("train/", "perf/"))) == sorted(names) for r in evals.values())
    assert final == {k: evals[150][k] for k in names}
    assert 0.3 < final["val/accuracy"] < 1 and final["val/accuracy"] != final["eval/accuracy"]
    best = max(evals, key=lambda s: (evals[s]["val/accuracy"], -s))
    from fmjax import checkpoint
    assert set(checkpoint.read_only_manager(tmp_path).all_steps()) == {best, 150}
    reported = json.loads(run_cli("eval", "--workdir", tmp_path).stdout)
    assert reported == {"step": 150, **{k: pytest.approx(evals[150][k], rel=1e-6)
                                        for k in names}}


def test_generative_tasks_measure_the_val_split_too(tmp_path):
    """VAE: val/neg_elbo etc. on the held-out images (same bounds as eval), feature distance
    against them; the eval images are still written."""
    run_cli("train", "--config", "experiments/mnist/vae.py:digits", "--workdir", tmp_path,
            "--config.data.validation_fraction=0.2", "--config.train.num_steps=20",
            "--config.train.eval_every=20", "--config.checkpoint.every=20",
            "--config.checkpoint.best_metric=val/neg_elbo", "--config.checkpoint.best_mode=min",
            "--config.task_options.iw_samples=5", "--noprogress")
    (last,) = [r for r in read_metrics(tmp_path) if "val/neg_elbo" in r]
    assert last["val/iw_nll"] <= last["val/neg_elbo"] and last["val/kl"] > 0, last
    assert 0 < last["val/feature_distance"] and last["val/loss"] == last["val/neg_elbo"]
    assert last["val/neg_elbo"] != last["eval/neg_elbo"]
    assert json.loads((tmp_path / "data_info.json").read_text())["num_val"] == 288   # 20% of 1437
    assert (tmp_path / "images" / "prior_samples_00000020.png").exists()


# ---- Model selection never reads a test split ---------------------------------------------

def test_selection_metrics_name_the_validation_splits():
    mlp = experiment_config(MLP)
    assert configs.selection_metrics(mlp) == ()
    mlp.data.validation_fraction = 0.1
    assert configs.selection_metrics(mlp)[:2] == ("val/loss", "val/accuracy")
    assert configs.selection_metrics(experiment_config(GPT)) == (
        "eval/loss", "eval/bits_per_token", "eval/perplexity")
    configs.validate(experiment_config(GPT))   # the char GPT keeps its best eval/loss checkpoint
    sst2 = experiment_config("experiments/text/bert_classify.py")
    assert sst2.checkpoint.best_metric in configs.selection_metrics(sst2)
    imdb = experiment_config("experiments/text/bert_classify.py", "imdb")
    assert configs.selection_metrics(imdb) == ()


@pytest.mark.parametrize("config_args, message", [
    (["--config", MLP, "--config.checkpoint.best_metric=eval/accuracy"],
     "config.checkpoint.best_metric='eval/accuracy' reads the eval split of data 'mnist1d', a "
     "test split: model selection must not; set config.data.validation_fraction (e.g. 0.1) and "
     "use 'val/accuracy'"),
    (["--config", MLP, "--config.train.early_stopping.metric=val/loss"],
     "config.train.early_stopping.metric='val/loss' needs config.data.validation_fraction > 0 "
     "(data 'mnist1d' holds out no validation split by default); set "
     "config.data.validation_fraction (e.g. 0.1) and use 'val/loss'"),
    (["--config", MLP, "--config.data.validation_fraction=0.1",
      "--config.checkpoint.best_metric=eval/loss"],
     "config.checkpoint.best_metric='eval/loss' reads the eval split of data 'mnist1d', a test "
     "split: model selection must not; use one of: val/loss, val/accuracy, val/precision_macro, "
     "val/recall_macro, val/f1_macro, val/roc_auc_ovr"),
    (["--config", GPT, "--config.checkpoint.best_metric=val/loss"],
     "config.checkpoint.best_metric='val/loss' is not reported: data 'text' has no "
     "validation_fraction; its eval split is its validation split (its size: "
     "config.data.val_fraction), logged as eval/*; use one of: eval/loss, eval/bits_per_token, "
     "eval/perplexity"),
    (["--config", GPT, "--config.data.validation_fraction=0.1"],
     "unknown config key --config.data.validation_fraction: config.data.validation_fraction "
     "holds out a validation split for mnist1d, digits, diabetes, tfds and text_classification "
     "only; a text source's eval split already is one (its size: config.data.val_fraction)"),
    (["--config", MLP, "--config.data.validation_fraction=1.0"],
     "config.data.validation_fraction=1.0 is out of range: must be in [0, 1)"),
])
def test_selecting_on_a_test_split_is_one_line_and_nothing_written(tmp_path, config_args,
                                                                  message):
    workdir = tmp_path / "never_created"
    proc = run_cli("train", "--workdir", workdir, *config_args, check=False)
    assert (proc.returncode, proc.stderr) == (2, f"fmjax: error: {message}\n")
    assert not workdir.exists()


def test_a_too_small_split_is_a_user_error():
    config = configs.experiment(model=dict(name="mlp"),
                                data=dict(name="digits", validation_fraction=0.001))
    with pytest.raises(UserError, match=r"^config.data.validation_fraction=0.001 of 1437 "
                                        r"training examples: "):
        data.build_pipeline(config.data, 0)


def test_a_run_from_before_the_rule_still_loads_but_does_not_resume(tmp_path):
    """A workdir whose config.json selects on eval/accuracy (the old default) and whose
    data_info.json has no num_val: `runs.load` (fmjax eval, sample) still reads it; training it
    further is refused with the one-line selection error."""
    from fmjax import runs
    config = experiment_config(MLP)
    config.train.update(num_steps=20, eval_every=20, log_every=20, steps_per_call=20)
    config.checkpoint.every = 20
    train_and_evaluate(config, tmp_path, show_progress=False)
    old = json.loads((tmp_path / "config.json").read_text())
    old["checkpoint"]["best_metric"] = "eval/accuracy"
    del old["train"]["early_stopping"], old["data"]["validation_fraction"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    info = json.loads((tmp_path / "data_info.json").read_text())
    del info["num_val"]
    (tmp_path / "data_info.json").write_text(json.dumps(info))
    run = runs.load(tmp_path)
    assert (run.step, run.exp.task.info.num_val) == (20, 0)
    with pytest.raises(UserError, match=r"^config.checkpoint.best_metric='eval/accuracy' reads "):
        train_and_evaluate(runs.read_config(tmp_path), tmp_path, show_progress=False)
