"""Optimizers and schedules built from config do what their names say."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import run_cli
from fmjax import configs, optim
from fmjax.train import train_and_evaluate


def opt_config(**overrides):
    c = configs.base_config().optimizer
    c.update(overrides)
    return c


def test_warmup_cosine_schedule():
    lr = optim.schedule(opt_config(learning_rate=1.0, schedule="warmup_cosine", warmup_steps=10,
                                   end_learning_rate=0.1), num_steps=110)
    np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)],
                               [0.0, 0.5, 1.0, 0.55, 0.1], rtol=1e-5, atol=1e-7)


def test_warmup_linear_and_step_schedules():
    lin = optim.schedule(opt_config(learning_rate=2.0, schedule="warmup_linear", warmup_steps=10),
                         num_steps=30)
    np.testing.assert_allclose([lin(5), lin(10), lin(20), lin(30)], [1.0, 2.0, 1.0, 0.0],
                               atol=1e-6)
    step = optim.schedule(opt_config(learning_rate=1.0, schedule="step",
                                     decay_boundaries=(10, 20), decay_factor=0.1), num_steps=30)
    np.testing.assert_allclose([step(9), step(10), step(19), step(25)], [1.0, 0.1, 0.1, 0.01],
                               rtol=1e-6)


def test_weight_decay_skips_biases_and_norm_parameters():
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
              "norm": {"scale": jnp.ones(4)},
              "attention": {"query_bias": jnp.ones((2, 3))}}   # per-head bias: 2-D, no decay
    tx = optim.build(opt_config(name="adamw", learning_rate=1.0, weight_decay=0.5), 10)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.5)   # zero gradient: decay only
    assert jnp.all(updates["dense"]["bias"] == 0) and jnp.all(updates["norm"]["scale"] == 0)
    assert jnp.all(updates["attention"]["query_bias"] == 0)
    tx = optim.build(opt_config(name="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.5), 10)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.5)   # L2 on kernels
    assert jnp.all(updates["dense"]["bias"] == 0)


def test_clipping_bounds_the_update():
    tx = optim.build(opt_config(name="sgd", learning_rate=1.0, momentum=0.0), 10,
                     clip_grad_norm=1.0)
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
    np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_injected_options_come_from_the_optimizer_state(name):
    """`injected` options are read from state.hyperparams: unchanged, the updates equal the
    plain optimizer's; changed there, they equal those of an optimizer built with that value."""
    opt = opt_config(name=name, learning_rate=0.1, weight_decay=0.01, momentum=0.9)
    params = {"w": jnp.arange(4.0).reshape(2, 2)}
    grads = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]])}

    def two_updates(tx, state):
        for _ in range(2):
            updates, state = tx.update(grads, state, params)
        return updates["w"]

    injected = optim.build(opt, 10, injected=("learning_rate", "weight_decay"))
    state = injected.init(params)
    assert set(state.hyperparams) == {"learning_rate", "weight_decay"}
    plain = optim.build(opt, 10)
    np.testing.assert_array_equal(two_updates(injected, state),
                                  two_updates(plain, plain.init(params)))
    state = state._replace(hyperparams={"learning_rate": jnp.float32(0.02),
                                        "weight_decay": jnp.float32(0.5)})
    other = optim.build(opt_config(**{**opt.to_dict(), "learning_rate": 0.02,
                                      "weight_decay": 0.5}), 10)
    np.testing.assert_allclose(two_updates(injected, state), two_updates(other, other.init(params)),
                               rtol=1e-6)


@pytest.mark.parametrize("name, lr", [("sgd", 0.05), ("adam", 3e-3), ("adamw", 3e-3),
                                      ("rmsprop", 1e-3), ("adafactor", 1e-2)])
def test_every_optimizer_trains_the_mlp(tmp_path, name, lr):
    """Each optimizer, through the full sharded loop, beats chance on MNIST-1D by 15 points."""
    config = configs.experiment(
        model=dict(name="mlp"), data=dict(name="mnist1d"),
        train=dict(num_steps=200, batch_size=64, log_every=100, eval_every=200,
                   steps_per_call=100, clip_grad_norm=1.0),
        optimizer=dict(name=name, learning_rate=lr, schedule="warmup_cosine", warmup_steps=20,
                       weight_decay=1e-4),
        checkpoint=dict(every=200))
    assert train_and_evaluate(config, tmp_path, show_progress=False)["eval/accuracy"] > 0.25


def singular_values(x_MN):
    return np.linalg.svd(np.asarray(x_MN), compute_uv=False)


def test_muon_orthogonalizes_block_matrices_and_leaves_the_rest_to_adamw():
    """A block's kernels (2-D, the attention's (D, N, H) and out (N, H, D)) move by a near-
    orthogonal matrix (every singular value ~1 x lr, the gradient's spread 30x); embeddings and
    biases get AdamW's first step, lr x sign(gradient)."""
    rng = np.random.default_rng(0)
    u_8x8, v_8x8 = (np.linalg.qr(rng.normal(size=(8, 8)))[0] for _ in range(2))
    grad_8x8 = u_8x8 @ np.diag(np.geomspace(1.0, 30.0, 8)) @ v_8x8
    grads = {"block_0": {"mlp": {"kernel": grad_8x8},
                         "attention": {"query_kernel": grad_8x8.reshape(8, 2, 4),
                                       "out_kernel": grad_8x8.reshape(2, 4, 8),
                                       "out_bias": grad_8x8[0]}},
             "token_embed": {"embedding": grad_8x8}}
    grads = jax.tree.map(jnp.float32, grads)
    assert singular_values(grad_8x8).max() / singular_values(grad_8x8).min() > 29
    tx = optim.build(opt_config(name="muon", learning_rate=0.1, adam_learning_rate=0.01), 10)
    params = jax.tree.map(jnp.zeros_like, grads)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    block = updates["block_0"]
    for update_8x8 in (block["mlp"]["kernel"], block["attention"]["query_kernel"].reshape(8, 8),
                       block["attention"]["out_kernel"].reshape(8, 8)):
        np.testing.assert_allclose(singular_values(update_8x8), 0.1, rtol=0.35)
    for name, update in (("out_bias", block["attention"]["out_bias"]),
                         ("embedding", updates["token_embed"]["embedding"])):
        grad = grads["block_0"]["attention"]["out_bias"] if name == "out_bias" \
            else grads["token_embed"]["embedding"]
        np.testing.assert_allclose(update, -0.01 * np.sign(grad), rtol=1e-3, err_msg=name)


def test_the_speedrun_variant_trains(tmp_path, text_file):
    """gpt_char.py:cpu_speedrun's recipe (Muon + AdamW) learns a small text in 30 steps (one
    layer of its model, to compile fast): eval/loss 0.885 measured; with Muon's block rate at
    1e-9 (AdamW alone on embeddings and head) 1.70, so the bound shows Muon's share."""
    config = configs.load_experiment("experiments/shakespeare/gpt_char.py:cpu_speedrun")
    config.data.update(path=str(text_file), eval_windows=64)
    config.model.num_layers = 1
    config.train.update(num_steps=30, eval_every=30, log_every=30, steps_per_call=30)
    config.checkpoint.every = 30
    config.optimizer.warmup_steps = 5
    metrics = train_and_evaluate(config, tmp_path, show_progress=False)
    assert metrics["eval/loss"] < 1.1   # chance: ln(vocabulary of ~30 characters) = 3.4


@pytest.mark.parametrize("override, message", [
    ("--config.optimizer.name=muon",
     "fmjax: error: optimizer 'muon' found no trained matrices inside block_i (it is for "
     "Transformer blocks; the rest would silently get AdamW): use adamw\n"),
    ("--config.optimizer.adam_learning_rate=0.01",
     "fmjax: error: config.optimizer.adam_learning_rate is muon's (the rate of what is not a "
     "block matrix); 'adam' has one rate: set learning_rate\n"),
])
def test_muon_options_where_they_would_do_nothing_are_one_line(tmp_path, override, message):
    """Muon on a model without Transformer blocks (the CNN), or muon's AdamW rate with another
    optimizer, would train silently as something else: refused before the workdir exists."""
    proc = run_cli("train", "--config", "experiments/mnist1d/cnn.py", override, "--workdir",
                   tmp_path / "run", "--noprogress", check=False)
    assert (proc.returncode, proc.stderr) == (2, message)
    assert not (tmp_path / "run").exists()
