"""Every config error is caught before the workdir is touched: each numeric key has a declared
valid range (fmjax/ranges.py) checked in `prepare`, metric names must be ones the task reports,
and a broken experiment file gets one line naming the problem."""

import dataclasses
import math
import re
import types
import typing
from typing import Annotated

import numpy as np
import pytest

from conftest import EXPERIMENTS, REPO, run_cli
from fmjax import configs, data, models, optim, ranges, tasks, train
from fmjax.compression import pruning
from fmjax.errors import UserError
from test_cli import _assert_clean_failure


def set_key(config, key: str, value) -> None:
    *sections, name = key.split(".")
    target = configs.value_at(config, ".".join(sections)) if sections else config
    target[name] = value


# ---- Every numeric key declares its range ---------------------------------------------------

def _holds_numbers(value) -> bool:
    """A number (not a bool), or a non-empty tuple of numbers."""
    values = value if isinstance(value, tuple) else (value,)
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in values)


def _numeric_type(hint) -> bool:
    """int or float (annotated or not), or a sequence of them."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return hint in (int, float) or (len(args) == 1 and _numeric_type(args[0]))


def _config_fields():
    """(name, dataclass field, default) for every field of every model, dataset, task options
    and optimizer options class that is a config key (has a default)."""
    classes = [("model", cls) for cls in models.MODELS.values()]
    classes += [("data", cls) for cls in data.SOURCES.values()]
    classes += [("task_options", task.Options) for task in tasks.TASKS.values()]
    classes += [("optimizer", optim.OptimizerOptions)]
    for section, cls in classes:
        defaults = configs._field_defaults(cls)
        for field in dataclasses.fields(cls):
            if field.name in defaults:
                yield f"{section}.{cls.__name__}.{field.name}", field, defaults[field.name]


def test_every_numeric_field_declares_its_range():
    """A new model, dataset or task field (or base key) that holds numbers cannot skip its range;
    a float range needs a float default, or `--config.x=0.5` would be parsed as an int."""
    missing = []
    for key, field, default in _config_fields():
        valid, _ = ranges.declared(field.type)
        if (_numeric_type(field.type) or _holds_numbers(default)) and valid is None:
            missing.append(key)
        if valid is not None and not valid.integer and not isinstance(default, float):
            missing.append(f"{key} (a float range with default {default!r})")
    base_config = configs.base_config()
    base = {key: configs.value_at(base_config, key) for key in configs.dotted_keys(base_config)}
    declared = {*configs.BASE_RANGES, *(f"optimizer.{k}" for k in optim.defaults()),
                *(f"pruning.{k}" for k in pruning.defaults())}
    missing += [key for key, value in base.items() if _holds_numbers(value) and key not in declared]
    assert not missing, f"numeric config fields without a declared range: {missing}"
    assert declared <= set(base), "a declared range for a key the base config lacks"


# ---- Shipped experiments stay valid; their metric names are what eval reports -----------------

def _fake_eval_outputs(task_name: str) -> dict:
    """Small per-example outputs shaped like each task's `eval_outputs`."""
    n, rng = 6, np.random.default_rng(0)
    sums = {"nll_sum": rng.uniform(1, 2, n), "correct": np.full(n, 2), "count": np.full(n, 4)}
    images = {"sample": rng.uniform(size=(n, 8, 8, 1)), "real": rng.uniform(size=(n, 8, 8, 1))}
    return {
        "classification": {"logits": rng.normal(size=(n, 3)), "labels": np.arange(n) % 3},
        "regression": {"preds": rng.normal(size=(n, 1)), "targets": rng.normal(size=(n, 1))},
        "lm": {"nll_sum": rng.uniform(1, 2, n), "tokens": np.full(n, 8)},
        "mlm": sums,
        "translation": {**sums, "translation": np.ones((n, 5), np.int32),
                        "index": np.arange(n)},
        "vae": {"neg_elbo": rng.uniform(size=n), "kl": rng.uniform(size=n),
                "iw_nll": rng.uniform(size=n), **images},
        "gan": images,
    }[task_name]


def test_every_task_has_a_shipped_experiment():
    """So the test below checks every task's metric names."""
    assert {configs.load_experiment(str(REPO / p)).task for p in EXPERIMENTS} == set(tasks.TASKS)


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_declared_eval_metrics_are_the_ones_eval_reports(path):
    """`Task.EVAL_METRICS` (what config metric names are checked against before training) equals
    the keys `eval_metrics` returns, for every shipped experiment's task."""
    config = configs.load_experiment(str(REPO / path))
    task_class = tasks.TASKS[config.task]
    host_side = types.SimpleNamespace(   # what eval_metrics reads from the task besides outputs
        feature_distance=lambda generated, real: 1.0,
        detokenize=lambda tokens_BL: ["a b"] * len(tokens_BL),
        references=["a b", "a c", "b c", "a", "b", "c"])
    metrics = task_class.eval_metrics(host_side, _fake_eval_outputs(config.task))
    assert sorted(metrics) == sorted(task_class.EVAL_METRICS)


# ---- Bad values: one UserError naming key, value and range, from `validate` ------------------

CNN, GPT, MT = "experiments/mnist1d/cnn.py", "experiments/shakespeare/gpt_char.py", \
    "experiments/translate/synthetic.py"
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("path, key, value, expected", [
    (CNN, "model.dropout_rate", 1.5, "config.model.dropout_rate=1.5 is out of range: must be in "
                                     "[0, 1)"),
    (CNN, "optimizer.learning_rate", NAN, "config.optimizer.learning_rate=nan is out of range: "
                                          "must be in (0, inf)"),
    (CNN, "optimizer.learning_rate", INF, "config.optimizer.learning_rate=inf is out of range"),
    (CNN, "optimizer.learning_rate", 0.0, "config.optimizer.learning_rate=0.0 is out of range"),
    (CNN, "train.seed", -1, "config.train.seed=-1 is out of range: must be an integer in "
                            "[0, 2**32 - 1]"),
    (CNN, "train.seed", 2**32, "config.train.seed=4294967296 is out of range"),
    (CNN, "train.num_steps", 0, "config.train.num_steps=0 is out of range: must be an integer "
                                "in [1, 2**31 - 1]"),
    (CNN, "train.num_steps", 2**31, "config.train.num_steps=2147483648 is out of range"),
    (CNN, "train.steps_per_call", 0, "config.train.steps_per_call=0 is out of range"),
    (CNN, "train.batch_size", -8, "config.train.batch_size=-8 is out of range"),
    (CNN, "train.eval_batch_size", 0, "config.train.eval_batch_size=0 is out of range"),
    (CNN, "train.clip_grad_norm", -1.0, "config.train.clip_grad_norm=-1.0 is out of range: "
                                        "must be in [0, inf)"),
    (CNN, "train.clip_grad_norm", NAN, "config.train.clip_grad_norm=nan is out of range"),
    (CNN, "train.z_loss", INF, "config.train.z_loss=inf is out of range"),
    (CNN, "train.max_nan_skips", -1, "config.train.max_nan_skips=-1 is out of range"),
    (CNN, "checkpoint.keep", 0, "config.checkpoint.keep=0 is out of range"),
    (CNN, "mesh.data", 0, "config.mesh.data=0 is out of range: must be an integer in "
                          "[1, 2**31 - 1], or -1"),
    (CNN, "mesh.fsdp", -2, "config.mesh.fsdp=-2 is out of range"),
    (CNN, "init_from_step", -1, "config.init_from_step=-1 is out of range"),
    (CNN, "optimizer.b1", 1.0, "config.optimizer.b1=1.0 is out of range: must be in [0, 1)"),
    (CNN, "optimizer.b2", -0.1, "config.optimizer.b2=-0.1 is out of range"),
    (CNN, "optimizer.eps", 0.0, "config.optimizer.eps=0.0 is out of range"),
    (CNN, "optimizer.momentum", 1.0, "config.optimizer.momentum=1.0 is out of range"),
    (CNN, "optimizer.weight_decay", -0.1, "config.optimizer.weight_decay=-0.1 is out of range"),
    (CNN, "optimizer.end_learning_rate", NAN, "config.optimizer.end_learning_rate=nan is out"),
    (CNN, "optimizer.warmup_steps", -5, "config.optimizer.warmup_steps=-5 is out of range"),
    (CNN, "optimizer.decay_factor", 0.0, "config.optimizer.decay_factor=0.0 is out of range"),
    (CNN, "optimizer.decay_boundaries", (100, -5), "config.optimizer.decay_boundaries[1]=-5 is "
                                                   "out of range: must be an integer in [0, "),
    (CNN, "optimizer.decay_boundaries", (100, 2.5), "config.optimizer.decay_boundaries[1]=2.5 "
                                                    "is not an integer"),
    (CNN, "model.features", 0, "config.model.features=0 is out of range"),
    (CNN, "model.kernel_sizes", (5, 0), "config.model.kernel_sizes[1]=0 is out of range"),
    (CNN, "model.stride", 0, "config.model.stride=0 is out of range"),
    (CNN, "model.padding", -1, "config.model.padding=-1 is out of range"),
    (CNN, "data.train_split", 1.0, "config.data.train_split=1.0 is out of range: must be in "
                                   "(0, 1)"),
    (CNN, "data.num_samples", 9, "config.data.num_samples=9 is out of range: must be an "
                                 "integer in [10, 2**31 - 1]"),
    (CNN, "data.dataset_seed", -1, "config.data.dataset_seed=-1 is out of range"),
    (GPT, "model.num_heads", 0, "config.model.num_heads=0 is out of range"),
    (GPT, "model.max_len", 0, "config.model.max_len=0 is out of range"),
    (GPT, "data.val_fraction", 1.5, "config.data.val_fraction=1.5 is out of range: must be in "
                                    "(0, 1)"),
    (GPT, "data.val_fraction", 0.0, "config.data.val_fraction=0.0 is out of range"),
    (GPT, "data.seq_len", 0, "config.data.seq_len=0 is out of range"),
    (GPT, "data.eval_windows", -1, "config.data.eval_windows=-1 is out of range"),
    (MT, "task_options.beam_size", 0, "config.task_options.beam_size=0 is out of range"),
    (MT, "task_options.label_smoothing", 1.0, "config.task_options.label_smoothing=1.0 is out"),
    (MT, "task_options.length_penalty", NAN, "config.task_options.length_penalty=nan is out"),
    (MT, "data.max_number", 10**6, "config.data.max_number=1000000 is out of range: must be an "
                                   "integer in [0, 999999]"),
    (MT, "data.num_eval", 0, "config.data.num_eval=0 is out of range"),
    ("experiments/mnist/dcgan.py", "task_options.d_steps", 0,
     "config.task_options.d_steps=0 is out of range"),
    ("experiments/mnist/dcgan.py", "task_options.gp_weight", -1.0,
     "config.task_options.gp_weight=-1.0 is out of range"),
    ("experiments/mnist/vae.py", "task_options.iw_samples", 0,
     "config.task_options.iw_samples=0 is out of range"),
    ("experiments/mnist/vae.py", "task_options.num_eval_images", 1,
     "config.task_options.num_eval_images=1 is out of range: must be an integer in [2, "),
    ("experiments/text/bert_mlm.py", "task_options.mask_rate", 0.0,
     "config.task_options.mask_rate=0.0 is out of range: must be in (0, 1)"),
    ("experiments/text/bert_classify.py", "task_options.mixup_alpha", -0.2,
     "config.task_options.mixup_alpha=-0.2 is out of range"),
    ("experiments/digits/resnet.py", "model.stage_sizes", (2, 0),
     "config.model.stage_sizes[1]=0 is out of range"),
    ("experiments/digits/resnet.py", "data.rotate_degrees", 200.0,
     "config.data.rotate_degrees=200.0 is out of range: must be in [0, 180]"),
    ("experiments/digits/resnet.py", "data.num_classes", 1,
     "config.data.num_classes=1 is out of range: must be an integer in [2, 10]"),
    ("experiments/vision/vit_cifar10.py", "model.patch_size", 0,
     "config.model.patch_size=0 is out of range"),
    (CNN, "checkpoint.best_metric", "eval/acuracy",
     "config.checkpoint.best_metric='eval/acuracy' is not a metric of task 'classification' "
     "(it reports: loss, accuracy, precision_macro"),
    (GPT, "checkpoint.best_metric", "eval/accuracy",
     "config.checkpoint.best_metric='eval/accuracy' is not a metric of task 'lm' (it reports: "
     "loss, bits_per_token, perplexity); use one of: eval/loss, eval/bits_per_token, "
     "eval/perplexity"),
])
def test_bad_value_is_one_user_error_naming_key_value_and_range(path, key, value, expected):
    config = configs.load_experiment(str(REPO / path))
    set_key(config, key, value)
    with pytest.raises(UserError) as error:
        configs.validate(config)
    assert str(error.value).startswith(expected), str(error.value)


def test_a_model_value_keeps_its_fields_type():
    """`dropout_rate=0` in an experiment file stays a float, so `--config.model.dropout_rate=0.5`
    is accepted (the key's type used to be the int the file wrote)."""
    config = configs.experiment(model=dict(name="mlp", dropout_rate=0), data=dict(name="mnist1d"))
    assert isinstance(config.model.dropout_rate, float)


def test_range_text_reads_as_math():
    assert str(ranges.declared(ranges.PositiveInt)[0]) == "an integer in [1, 2**31 - 1]"
    assert str(ranges.declared(ranges.OpenFraction)[0]) == "in (0, 1)"
    assert ranges.declared(ranges.PositiveFloat)[0].problem(math.inf) == "is out of range"
    assert ranges.declared(ranges.PositiveInt)[0].problem(True) == "is not a number"


# ---- Through the CLI: one line, exit status 2, no workdir -----------------------------------

def _experiment_file(tmp_path, body: str):
    path = tmp_path / "exp.py"
    path.write_text(body)
    return path


# The cases the issue names, end to end; every other bad value and file is checked in-process
# (above and below), through the same `configs.load_experiment`, `validate` and `prepare`.
@pytest.mark.parametrize("args, fragment", [
    (["--config", CNN, "--config.model.dropout_rate=1.5"],
     "config.model.dropout_rate=1.5 is out of range: must be in [0, 1)"),
    (["--config", CNN, "--config.optimizer.learning_rate=nan"],
     "config.optimizer.learning_rate=nan is out of range: must be in (0, inf)"),
    (["--config", GPT, "--config.data.val_fraction=1.5"],
     "config.data.val_fraction=1.5 is out of range: must be in (0, 1)"),
    (["--config", "experiments/mnist1d/mlp.py", "--config.model.hidden_size=0"],
     "config.model.hidden_size=0 is out of range: must be an integer in [1, 2**31 - 1]"),
    (["--config", CNN, "--config.train.seed=-1"], "config.train.seed=-1 is out of range"),
    (["--config", CNN, "--config.checkpoint.best_metric=eval/acuracy"],
     "config.checkpoint.best_metric='eval/acuracy' is not a metric of task 'classification' "
     "(it reports: loss, accuracy, precision_macro, recall_macro, f1_macro, roc_auc_ovr); set "
     "config.data.validation_fraction (e.g. 0.1) and use 'val/accuracy'"),
])
def test_bad_numbers_and_names_fail_before_any_work(tmp_path, args, fragment):
    workdir = tmp_path / "never_created"
    proc = run_cli("train", "--workdir", workdir, *args, check=False)
    _assert_clean_failure(proc, workdir, fragment)


@pytest.mark.parametrize("path, overrides, fragment", [
    ("experiments/mnist/dcgan.py:digits",
     {"task_options.discriminator_optimizer.learning_rate": float("nan")},
     "config.task_options.discriminator_optimizer.learning_rate=nan is out of range"),
    (CNN, {"model.kernel_sizes": (50,)},
     "config.model ('cnn1d') cannot be built for inputs of shape (40,)"),
    ("experiments/digits/resnet.py", {"model.features": (16,)},
     "config.model.stage_sizes=(2, 2) and features=(16,) need one entry per stage"),
    ("experiments/digits/resnet.py", {"data.test_fraction": 0.001},
     "config.data.test_fraction=0.001: The test_size = 2 should be greater or equal to the "
     "number of classes = 10"),
    (CNN, {"data.num_samples": 10, "data.train_split": 0.05},
     "config.data.num_samples=10 with train_split=0.05 leaves 0 train and 10 test examples"),
])
def test_values_no_range_can_catch_fail_in_prepare(path, overrides, fragment):
    config = configs.load_experiment(str(REPO / path))
    for key, value in overrides.items():
        set_key(config, key, value)
    with pytest.raises(UserError, match=re.escape(fragment)):
        train.prepare(config)


@pytest.mark.parametrize("body, fragment", [
    ("def get_config(variant=''):\n    return {'train': {}}\n",
     "exp.py: get_config() returned dict, not an ml_collections ConfigDict (build it with "
     "fmjax.configs.experiment)"),
    ("def get_config(variant=''):\n    pass\n",
     "exp.py: get_config() returned NoneType, not an ml_collections ConfigDict"),
    ("CONFIG = 1\n", "exp.py has no get_config function"),
])
def test_broken_experiment_file_is_one_line_naming_it(tmp_path, body, fragment):
    workdir = tmp_path / "never_created"
    proc = run_cli("train", "--workdir", workdir, "--config",
                   _experiment_file(tmp_path, body), check=False)
    _assert_clean_failure(proc, workdir, fragment)


@pytest.mark.parametrize("body, fragment", [
    ("import ml_collections\ndef get_config():\n    return ml_collections.ConfigDict({'a': 1})\n",
     "exp.py: get_config() returned a config without config.checkpoint (build it with "
     "fmjax.configs.experiment)"),
    ("def get_config(variant=''):\n    return (\n", "exp.py, line 2: syntax error: '(' was never "
                                                    "closed"),
    ("def get_config(variant=''):\n    raise RuntimeError('no data here')\n",
     "exp.py, line 2: get_config() raised RuntimeError: no data here"),
    ("import fmjax_no_such_module\n", "exp.py, line 1: ModuleNotFoundError: No module named "
                                      "'fmjax_no_such_module'"),
    ("from fmjax import configs\ndef get_config():\n"
     "    return configs.experiment(model=dict(name='mlp', hidden_size=100.0),\n"
     "                              data=dict(name='mnist1d'))\n",
     "exp.py, line 3: get_config() raised TypeError: Could not override field 'hidden_size'"),
])
def test_broken_experiment_file_is_one_user_error_naming_it(tmp_path, body, fragment):
    with pytest.raises(UserError) as error:
        configs.load_experiment(str(_experiment_file(tmp_path, body)))
    assert fragment in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_train_without_config_is_one_line(tmp_path):
    proc = run_cli("train", "--workdir", tmp_path / "w", check=False)
    _assert_clean_failure(proc, tmp_path / "w", "--config is required for this command")


@pytest.mark.parametrize("task_name, metric, direction", [
    ("classification", "val/accuracy", "max"), ("classification", "val/loss", "min"),
    ("regression", "val/r2", "max"), ("regression", "val/mse", "min"),
    ("translation", "eval/bleu", "max"), ("lm", "eval/perplexity", "min")])
def test_auto_modes_read_the_metric_direction(task_name, metric, direction):
    config = configs.base_config()
    config.checkpoint.best_metric = config.train.early_stopping.metric = metric
    configs.check_modes(config, tasks.TASKS[task_name])
    assert (config.checkpoint.best_mode, config.train.early_stopping.mode) == (direction,) * 2


def test_a_mode_against_the_metric_direction_stops():
    """The default was best_mode="max": with val/loss it silently kept the worst checkpoint."""
    config = configs.base_config()
    config.checkpoint.update(best_metric="val/mse", best_mode="max")
    with pytest.raises(UserError) as e:
        configs.check_modes(config, tasks.TASKS["regression"])
    assert str(e.value) == ("config.checkpoint.best_mode='max' would select the worst val/mse: "
                            "lower is better; set 'min' or leave it 'auto'")
