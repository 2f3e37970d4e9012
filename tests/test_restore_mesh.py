"""A checkpoint written on 8 devices (mesh data=2 x fsdp=4) restores onto 1 or 4 (Orbax reshards
it onto the new mesh's shardings): `fmjax eval` reproduces the training run's last eval, and
training resumes on 1 device where the 8-device run would have gone."""

import json
import shutil

import jax
import numpy as np
import pytest

from conftest import read_metrics, run_cli
from fmjax import runs

FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.model.hidden_size=128",
         "--config.train.steps_per_call=5", "--config.train.log_every=5",
         "--config.train.eval_every=10", "--config.checkpoint.every=10",
         "--config.train.batch_size=64", "--config.train.eval_batch_size=200", "--noprogress"]
EIGHT = ["--config.mesh.data=2", "--config.mesh.fsdp=4"]   # 128-wide layers: FSDP shards them


@pytest.fixture(scope="module")
def eight_device_runs(tmp_path_factory):
    """(a run stopped at step 20, one that went straight to 40), both on 8 devices."""
    root = tmp_path_factory.mktemp("mesh")
    run_cli("train", "--workdir", root / "stopped", *FLAGS, *EIGHT,
            "--config.train.num_steps=20", devices=8)
    run_cli("train", "--workdir", root / "straight", *FLAGS, *EIGHT,
            "--config.train.num_steps=40", devices=8)
    return root / "stopped", root / "straight"


@pytest.mark.parametrize("devices", [1, 4])
def test_eval_on_fewer_devices_reproduces_the_training_eval(eight_device_runs, devices):
    stopped, _ = eight_device_runs
    logged = read_metrics(stopped)[-1]
    proc = run_cli("eval", "--workdir", stopped, devices=devices)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert f"using fsdp={devices}" in proc.stderr
    assert out["step"] == logged["step"] == 20
    assert out["eval/accuracy"] == pytest.approx(logged["eval/accuracy"], abs=1e-3)   # 1 of 1000
    assert out["eval/loss"] == pytest.approx(logged["eval/loss"], rel=1e-5)


def test_training_resumes_on_one_device(eight_device_runs, tmp_path):
    """Steps 21-40 on 1 device track the 8-device run's steps 21-40 (float tolerance: the
    reductions are split differently), and so do the final parameters."""
    stopped, straight = eight_device_runs
    resumed = tmp_path / "resumed"
    shutil.copytree(stopped, resumed)   # the eval tests share `stopped`
    proc = run_cli("train", "--workdir", resumed, *FLAGS, "--config.train.num_steps=40")
    assert "resuming from the checkpoint at step 20" in proc.stderr + proc.stdout
    got, expected = read_metrics(resumed), read_metrics(straight)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [5, 10, 15, 20, 25, 30,
                                                                           35, 40]
    for key in ("train/loss", "train/grad_norm"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in expected], rtol=1e-4,
                                   err_msg=key)
    np.testing.assert_allclose(got[-1]["eval/loss"], expected[-1]["eval/loss"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 jax.device_get(runs.load(resumed).params),
                 jax.device_get(runs.load(straight).params))
