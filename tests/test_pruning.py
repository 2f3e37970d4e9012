"""Magnitude pruning (fmjax/compression/pruning.py): the Zhu & Gupta schedule, one-shot `prune`,
and gradual pruning in the train loop with its masks in the optimizer state."""

import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest

from fmjax import configs, runs
from fmjax.compression import pruning
from fmjax.errors import Preempted, UserError
from fmjax.runtime.preemption import PreemptionWatch
from fmjax.train import train_and_evaluate
from conftest import REPO, read_metrics, run_cli


def pruning_options(**overrides):
    return ml_collections.ConfigDict({**pruning.defaults(), **overrides})


def test_schedule_is_zhu_and_gupta():
    p = pruning_options(sparsity=0.9, initial_sparsity=0.1, begin_step=100, end_step=500)
    steps = np.arange(0, 700, 7)
    expected = np.where(steps < 100, 0.0, 0.9 + (0.1 - 0.9) * (
        1 - np.clip((steps - 100) / 400, 0, 1)) ** 3)
    np.testing.assert_allclose([float(pruning.schedule(p)(t)) for t in steps], expected,
                               rtol=1e-6)
    one_shot = pruning.schedule(pruning_options(sparsity=0.8, begin_step=50, end_step=50))
    assert [float(one_shot(t)) for t in (0, 49, 50, 51, 1000)] == pytest.approx([0, 0] + [0.8] * 3)


def test_prune_global_and_per_layer():
    """Global: one threshold over all prunable weights (the small layer goes first); layer: each
    loses the same fraction. Biases, norm scales, embedding tables and excluded paths stay."""
    params = {"small": {"kernel": np.array([[1., -2.], [3., -4.]], np.float32),
                        "bias": np.zeros(2, np.float32)},
              "big": {"kernel": np.arange(10., 18., dtype=np.float32).reshape(2, 4)},
              "norm": {"scale": np.ones((2, 2), np.float32)},
              "token_embed": {"embedding": np.ones((3, 2), np.float32)}}
    global_ = pruning.prune(params, 0.5, "global")
    np.testing.assert_array_equal(global_["small"]["kernel"], np.zeros((2, 2)))
    np.testing.assert_array_equal(global_["big"]["kernel"], [[0, 0, 12, 13], [14, 15, 16, 17]])
    layer = pruning.prune(params, 0.5, "layer")
    np.testing.assert_array_equal(layer["small"]["kernel"], [[0, 0], [3, -4]])
    np.testing.assert_array_equal(layer["big"]["kernel"], [[0, 0, 0, 0], [14, 15, 16, 17]])
    for pruned in (global_, layer):
        np.testing.assert_array_equal(pruned["norm"]["scale"], params["norm"]["scale"])
        np.testing.assert_array_equal(pruned["token_embed"]["embedding"],
                                      params["token_embed"]["embedding"])
    assert pruning.sparsity_report(layer) == {
        "total": 0.5, "layers": {"big/kernel": 0.5, "small/kernel": 0.5}}
    kept = pruning.prune(params, 0.5, "global", exclude=("^small/",))
    np.testing.assert_array_equal(kept["small"]["kernel"], params["small"]["kernel"])
    np.testing.assert_array_equal(kept["big"]["kernel"], [[0, 0, 0, 0], [14, 15, 16, 17]])


def cnn_config(num_steps: int, granularity: str):
    """The MNIST-1D CNN pruned from step 10 to 80% by step 40 (masks every 10 steps)."""
    return configs.experiment(
        model=dict(name="cnn1d", features=8, kernel_sizes=(5, 3)), data=dict(name="mnist1d"),
        train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=1000, log_every=10,
                   eval_every=30, steps_per_call=5),
        optimizer=dict(name="adam", learning_rate=3e-3),
        pruning=dict(sparsity=0.8, initial_sparsity=0.2, begin_step=10, end_step=40,
                     frequency=10, granularity=granularity),
        checkpoint=dict(every=30, keep=5))


def assert_masked_weights_are_zero_with_zero_moments(state):
    masks = state.opt_state.masks
    adam = optax.tree.get(state.opt_state.inner_state, "ScaleByAdamState")
    for path, mask in pruning.prunable(masks).items():
        key = tuple(path.split("/"))
        weight, mu, nu = (np.asarray(_at(tree, key)) for tree in (state.params, adam.mu, adam.nu))
        assert mask.dtype == np.bool_
        assert not weight[~mask].any() and not mu[~mask].any() and not nu[~mask].any(), path
        assert weight[mask].all() and nu[mask].all(), path   # the kept ones train


def _at(tree, key):
    for k in key:
        tree = tree[k]
    return tree


def test_layer_pruning_reaches_its_target_in_each_layer_and_resumes_exactly(tmp_path,
                                                                             monkeypatch):
    """Preempted at step 25 (between mask updates) and resumed: bit-identical parameters and
    optimizer state (masks included) to an uninterrupted run."""
    with monkeypatch.context() as patch:
        answers = iter([False] * 4 + [True])   # stop after the fifth call (5 steps each)
        patch.setattr(PreemptionWatch, "requested", lambda self: next(answers))
        with pytest.raises(Preempted, match="at step 25: checkpoint saved"):
            train_and_evaluate(cnn_config(60, "layer"), tmp_path / "resumed", show_progress=False)
    train_and_evaluate(cnn_config(60, "layer"), tmp_path / "resumed", show_progress=False)
    train_and_evaluate(cnn_config(60, "layer"), tmp_path / "straight", show_progress=False)
    straight, resumed = (runs.load(tmp_path / name).state for name in ("straight", "resumed"))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight), jax.device_get(resumed))
    report = pruning.sparsity_report(straight.params)
    # each layer holds round(0.8 * size) zeros
    sizes = {p: np.size(w) for p, w in pruning.prunable(straight.params).items()}
    assert report["layers"] == {p: round(0.8 * n) / n for p, n in sizes.items()}
    assert set(sizes) == {"conv_0/kernel", "conv_1/kernel", "head/kernel"}
    assert_masked_weights_are_zero_with_zero_moments(straight)
    logged = {r["step"]: r["train/sparsity"] for r in read_metrics(tmp_path / "straight")
              if "train/sparsity" in r}
    assert logged[10] == pytest.approx(0.2, abs=2e-3) and logged[40] == pytest.approx(0.8, abs=2e-3)
    assert logged[60] == logged[40] and logged[10] < logged[20] < logged[30] < logged[40]


def test_global_pruning_reaches_its_target_overall(tmp_path):
    train_and_evaluate(cnn_config(40, "global"), tmp_path, show_progress=False)
    state = runs.load(tmp_path).state
    report = pruning.sparsity_report(state.params)
    total = sum(np.size(w) for w in pruning.prunable(state.params).values())
    assert report["total"] == round(0.8 * total) / total
    assert len(set(report["layers"].values())) == 3   # one threshold: layers lose different shares
    assert_masked_weights_are_zero_with_zero_moments(state)


@pytest.mark.parametrize("overrides, message", [
    (dict(sparsity=1.0), "config.pruning.sparsity=1.0 is out of range: must be in [0, 1)"),
    (dict(sparsity=0.5, granularity="row"),
     "unknown config.pruning.granularity 'row' (known: global, layer)"),
    (dict(sparsity=0.5, begin_step=20, end_step=10),
     "config.pruning.end_step=10 is before config.pruning.begin_step=20"),
    (dict(sparsity=0.5, end_step=61),
     "config.pruning.end_step=61 is after the last step (config.train.num_steps=60)"),
    (dict(sparsity=0.5, frequency=0),
     "config.pruning.frequency=0 is out of range: must be an integer in [1, 2**31 - 1]"),
    (dict(sparsity=0.5, initial_sparsity=0.6),
     "config.pruning.initial_sparsity=0.6 is above config.pruning.sparsity=0.5"),
    (dict(initial_sparsity=0.5), "config.pruning.initial_sparsity is set but "
     "config.pruning.sparsity is 0 (pruning off); set the final sparsity too"),
    (dict(sparsity=0.5, exclude=("conv_(",)),
     "config.pruning.exclude: bad regular expression 'conv_(': missing ), unterminated "
     "subpattern at position 5"),
])
def test_bad_pruning_config_is_one_line(small_config, overrides, message):
    small_config.pruning.update(overrides)
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        configs.validate(small_config)


@pytest.mark.parametrize("exclude, message", [
    (("conv_9",), "config.pruning.exclude: 'conv_9' matches no parameter (parameters look like "
                  "'conv_0/bias')"),
    (("kernel",), "config.pruning: this model has no prunable parameter (prunable: ndim >= 2, "
                  "not a bias, norm scale or embedding table, not excluded)"),
])
def test_exclude_must_match_and_leave_something_to_prune(small_config, exclude, message):
    from fmjax import train
    small_config.pruning.update(dict(sparsity=0.5, exclude=exclude))
    with pytest.raises(UserError, match=f"^{re.escape(message)}"):   # (+ JAX's traceback note)
        train.prepare(small_config)


def test_gan_refuses_pruning(tmp_path):
    workdir = tmp_path / "never_created"
    proc = run_cli("train", "--config", "experiments/mnist/dcgan.py:digits", "--workdir", workdir,
                   "--config.pruning.sparsity=0.5", check=False)
    assert (proc.returncode, proc.stderr) == (2, (
        "fmjax: error: config.pruning: the 'gan' task steps two optimizers of its own and cannot "
        "be pruned; set config.pruning.sparsity=0\n"))
    assert not workdir.exists()


SHARDED = """
import json, sys
from fmjax import runs, train
from fmjax.compression import pruning
sys.path.insert(0, "tests")
from conftest import experiment_config
c = experiment_config("experiments/shakespeare/gpt_char.py", "runlocal")
c.data.path, c.train.batch_size, c.data.eval_windows = sys.argv[2], 16, 64
c.train.num_steps, c.train.steps_per_call, c.train.eval_every, c.checkpoint.every = 20, 10, 20, 20
c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
c.pruning.update(dict(sparsity=0.5, begin_step=0, end_step=10, frequency=5, granularity="layer"))
abstract = train.prepare(c).abstract_state
params, masks = (pruning.prunable(tree) for tree in (abstract.params, abstract.opt_state.masks))
train.train_and_evaluate(c, sys.argv[1], show_progress=False)
state = runs.load(sys.argv[1]).state
print(json.dumps({"same_shardings": all(masks[p].sharding == x.sharding for p, x in params.items()),
                  "split": sorted({str(x.sharding.spec) for x in params.values()}),
                  "sparsity": pruning.sparsity_report(state.params)["layers"]}))
"""


@pytest.mark.slow   # 8 CPU devices, about 55 s: run with -m slow
def test_masks_are_sharded_like_their_parameters(tmp_path, text_file):
    """On a data x fsdp x tensor mesh each mask gets its parameter's sharding, and the sharded
    mask update prunes each layer exactly."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", SHARDED, tmp_path / "run", text_file], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["same_shardings"] and "P('fsdp', 'tensor', None)" in out["split"], out
    assert len(out["sparsity"]) == 24 and set(out["sparsity"].values()) == {0.5}, out
