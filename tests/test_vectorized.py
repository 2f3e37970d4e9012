"""Vectorised trials (fmjax/sweep/vectorized.py): each member's records equal its solo run's."""

import json

import ml_collections
import numpy as np
import pytest

from conftest import experiment_config, read_metrics
from fmjax import train
from fmjax.errors import NonFiniteLoss, UserError
from fmjax.sweep import vectorized

# Two seeds x two learning rates.
MEMBERS = [{"train.seed": seed, "optimizer.learning_rate": lr}
           for seed in (0, 1) for lr in (1e-2, 3e-3)]


@pytest.fixture(scope="module")
def mlp_config():
    """The shipped MNIST-1D MLP (batch 100, Adam 1e-2), shortened to 200 steps."""
    config = experiment_config("experiments/mnist1d/mlp.py")
    config.train.num_steps = 200
    config.train.steps_per_call = 50
    config.train.log_every = 1
    config.train.eval_every = 100
    config.checkpoint.every = 100
    return config


@pytest.fixture(scope="module")
def solo_runs(mlp_config, tmp_path_factory):
    """(workdir, returned metrics) of each member's ordinary `train_and_evaluate` run."""
    runs = []
    for i, member in enumerate(MEMBERS):
        workdir = tmp_path_factory.mktemp(f"solo{i}")
        config = vectorized.member_config(mlp_config, member)
        runs.append((workdir, train.train_and_evaluate(config, workdir, show_progress=False)))
    return runs


def members_and_solo_runs(config, members: list[dict], tmp_path) -> list[tuple]:
    """Train `members` together, then each alone; (member dir, solo dir) per member."""
    dirs = [(tmp_path / str(i), tmp_path / f"solo{i}") for i in range(len(members))]
    vectorized.train_members(config, members, [member_dir for member_dir, _ in dirs])
    for member, (_, solo_dir) in zip(members, dirs):
        train.train_and_evaluate(vectorized.member_config(config, member), solo_dir,
                                 show_progress=False)
    return dirs


def train_records(workdir) -> list[dict]:
    """metrics.jsonl without perf/* (they time the machine, and members share it)."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")}
            for r in read_metrics(workdir)]


def assert_close_records(got: list[dict], want: list[dict], rtol: float) -> None:
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose([g[k] for k in sorted(g)], [w[k] for k in sorted(w)],
                                   rtol=rtol, err_msg=f"step {w['step']}")


@pytest.mark.parametrize("vmap", [False, True], ids=["lax_map", "vmap"])
def test_members_match_their_solo_runs(mlp_config, solo_runs, tmp_path, vmap):
    """Every train/* value of all 200 steps and every eval/* value, member vs its solo run: equal
    with lax.map (the CPU default). vmap's batched dots differ in the last bits, and training at
    lr 1e-2 amplifies that (one member's loss is 1.5e-5 off by step 159): to 1e-5 relative over
    the first 100 steps."""
    dirs = [tmp_path / str(i) for i in range(len(MEMBERS))]
    returned = vectorized.train_members(mlp_config, MEMBERS, dirs, vmap=vmap)
    for member_dir, (solo_dir, solo_metrics), got in zip(dirs, solo_runs, returned):
        want = train_records(solo_dir)
        assert len([r for r in want if "train/loss" in r]) == 200
        last = 100 if vmap else 200
        assert_close_records([r for r in train_records(member_dir) if r["step"] <= last],
                             [r for r in want if r["step"] <= last], rtol=1e-5 if vmap else 0)
        assert got.keys() == solo_metrics.keys()
        if not vmap:
            assert got == solo_metrics
        assert (json.loads((member_dir / "config.json").read_text())
                == json.loads((solo_dir / "config.json").read_text()))


def test_varied_betas_weight_decay_and_cosine_peak_match_solo_runs(mlp_config, tmp_path):
    """b1, b2, weight decay and the peak of a warmup_cosine schedule read from the optimizer
    state. Not bit-identical: the solo run computes 1 - b1 from a Python float (float64), the
    member from its float32 b1; so the loss curves to 1e-5 relative, over 20 steps: that
    last-bit difference stays near 1e-6 until a jump (at step 24 here, 5e-5) that training
    amplifies. A weight decay of 0 in one member and 1e-4 in another is one optimizer
    structure (the decay times 0)."""
    config = mlp_config.copy_and_resolve_references()
    config.train.num_steps = 20
    config.optimizer.update(schedule="warmup_cosine", warmup_steps=10, end_learning_rate=1e-4)
    members = [{"optimizer.b1": 0.8, "optimizer.b2": 0.99, "optimizer.weight_decay": 1e-4,
                "optimizer.learning_rate": 3e-3, "train.seed": 0},
               {"optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.weight_decay": 0.0,
                "optimizer.learning_rate": 1e-2, "train.seed": 1}]
    for member_dir, solo_dir in members_and_solo_runs(config, members, tmp_path):
        for name in ("train/loss", "train/learning_rate"):
            got, want = ([r[name] for r in read_metrics(d) if name in r]
                         for d in (member_dir, solo_dir))
            assert len(want) == 20
            np.testing.assert_allclose(got, want, rtol=1e-5)


def test_members_draw_their_own_seeds_dropout_masks(mlp_config, tmp_path):
    """With dropout, each member's 50 steps equal its solo run's."""
    config = mlp_config.copy_and_resolve_references()
    config.train.num_steps = 50
    config.model.dropout_rate = 0.1
    members = [{"train.seed": 0, "optimizer.learning_rate": 1e-2},
               {"train.seed": 1, "optimizer.learning_rate": 3e-3}]
    for member_dir, solo_dir in members_and_solo_runs(config, members, tmp_path):
        assert_close_records(train_records(member_dir), train_records(solo_dir), rtol=0)


def test_same_seed_and_options_give_identical_curves(mlp_config, tmp_path):
    """Members 0 and 1 are the same trial; member 2 differs only in its seed."""
    config = mlp_config.copy_and_resolve_references()
    config.train.num_steps = 50
    members = [{"train.seed": 3, "optimizer.learning_rate": 3e-3}] * 2 + [
        {"train.seed": 4, "optimizer.learning_rate": 3e-3}]
    dirs = [tmp_path / str(i) for i in range(3)]
    vectorized.train_members(config, members, dirs)
    curves = [[r["train/loss"] for r in read_metrics(d) if "train/loss" in r] for d in dirs]
    assert len(curves[0]) == 50
    assert curves[0] == curves[1]
    assert curves[0][0] != curves[2][0]


@pytest.mark.parametrize("member, message", [
    ({"model.hidden_size": 50},
     "'model.hidden_size' cannot be vectorised: members may differ only in "
     + ", ".join(vectorized.VECTORIZABLE_KEYS)),
    ({"optimizer.learning_rate": -1.0},
     "config.optimizer.learning_rate=-1.0 is out of range: must be in (0, inf)"),
])
def test_members_that_cannot_be_vectorised_are_user_errors(mlp_config, tmp_path, member,
                                                          message):
    with pytest.raises(UserError) as e:
        vectorized.train_members(mlp_config, [member], [tmp_path / "member"])
    assert str(e.value) == message
    assert not (tmp_path / "member").exists()


def test_is_vectorizable():
    assert vectorized.is_vectorizable("train.seed")
    assert vectorized.is_vectorizable("optimizer.weight_decay")
    assert not vectorized.is_vectorizable("model.hidden_size")
    assert not vectorized.is_vectorizable("optimizer.warmup_steps")


def test_a_member_whose_loss_diverges_stops_alone(mlp_config, tmp_path):
    """nan_policy 'stop': the diverging member's records end at its non-finite step, as its solo
    run's do (where the run stops with NonFiniteLoss); the other member trains on."""
    config = mlp_config.copy_and_resolve_references()
    config.train.num_steps = 50
    config.train.log_every = 10
    config.optimizer.name = "sgd"
    members = [{"optimizer.learning_rate": 1e4}, {"optimizer.learning_rate": 1e-2}]
    dirs = [tmp_path / "0", tmp_path / "1"]
    returned = vectorized.train_members(config, members, dirs)
    with pytest.raises(NonFiniteLoss):
        train.train_and_evaluate(vectorized.member_config(config, members[0]),
                                 tmp_path / "solo", show_progress=False)
    solo = train_records(tmp_path / "solo")
    assert not np.isfinite(solo[-1]["train/loss"])
    assert_close_records(train_records(dirs[0]), solo, rtol=0)
    assert returned[0] == {}
    assert [r["step"] for r in read_metrics(dirs[1])] == [10, 20, 30, 40, 50]
    solo_metrics = train.train_and_evaluate(vectorized.member_config(config, members[1]),
                                            tmp_path / "solo1", show_progress=False)
    assert_close_records(train_records(dirs[1]), train_records(tmp_path / "solo1"), rtol=0)
    assert returned[1] == solo_metrics


def test_early_stopping_is_refused(mlp_config, tmp_path):
    """Members cannot stop one by one (the shape of config.train.early_stopping, issue 13)."""
    config = mlp_config.copy_and_resolve_references()
    with config.unlocked():
        config.train.early_stopping = ml_collections.ConfigDict(
            dict(metric="val/loss", mode="min", patience=5, min_delta=0.0))
    with pytest.raises(UserError) as e:
        vectorized.train_members(config, [{"train.seed": 1}], [tmp_path / "member"])
    assert str(e.value) == ("vectorised trials train every member to config.train.num_steps; "
                            "set config.train.early_stopping.metric='' or run the trials one by "
                            "one")
    assert not (tmp_path / "member").exists()
