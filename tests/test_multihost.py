"""Real multi-process runs on localhost (`fmjax launch_local`: jax.distributed + gloo): 2 processes
x 4 CPU devices train like 1 process x 8 devices, checkpoints move between the two, each process
reads only its own rows of every batch, and a failing process stops the run promptly."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, read_metrics, run_cli
from fmjax import data
from fmjax.runtime import launch

# The MNIST-1D MLP with dropout on a (data=2, fsdp=4) mesh: the data axis spans the two processes
# and the parameters are FSDP-sharded, so both the gradient all-reduce and the checkpoint's
# shards cross process boundaries. Constant learning rate: a 15-step run is the first half of a
# 30-step one.
CONFIG = ["--config", "experiments/mnist1d/mlp.py", "--config.model.dropout_rate=0.1",
          "--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.train.batch_size=64",
          "--config.train.eval_batch_size=200", "--config.train.log_every=5",
          "--config.train.steps_per_call=5", "--config.train.eval_every=15",
          "--config.checkpoint.every=15", "--noprogress"]
STEPS = 30
# Not bitwise: gloo's cross-process all-reduce sums in another order than XLA's in-process one
# (measured: 1.2e-7 relative at most over 30 steps); far tighter than the 2e-4 across meshes.
RTOL = 1e-5


def launch_local(*args, num_processes=2, devices=4, check=True) -> subprocess.CompletedProcess:
    """`fmjax launch_local --num_processes=N --devices_per_process=D -- ARGS`."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    command = [sys.executable, "-m", "fmjax", "launch_local",
               f"--num_processes={num_processes}", f"--devices_per_process={devices}", "--",
               *map(str, args)]
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if check and proc.returncode:
        raise AssertionError(f"launch_local {' '.join(map(str, args))} failed "
                             f"({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def train_args(workdir, steps=STEPS):
    return ["train", "--workdir", workdir, *CONFIG, f"--config.train.num_steps={steps}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The workdirs of a 1x8 run and a 2x4 run of the same config, and the 2x4 run's stdout."""
    root = tmp_path_factory.mktemp("multihost")
    run_cli(*train_args(root / "one"), devices=8)
    two = launch_local(*train_args(root / "two"))
    return {"one": root / "one", "two": root / "two", "two_stdout": two.stdout,
            "two_stderr": two.stderr}


def assert_curves_agree(records, reference, after_step=0):
    records = [r for r in records if r["step"] > after_step]
    reference = [r for r in reference if r["step"] > after_step]
    assert [r["step"] for r in records] == [r["step"] for r in reference]
    for key in ("train/loss", "train/grad_norm"):
        np.testing.assert_allclose([r[key] for r in records], [r[key] for r in reference],
                                   rtol=RTOL, err_msg=key)
    np.testing.assert_allclose(records[-1]["eval/loss"], reference[-1]["eval/loss"], rtol=RTOL)


def test_two_processes_train_like_one(runs):
    records = read_metrics(runs["two"])
    assert_curves_agree(records, read_metrics(runs["one"]))
    # Process 0 alone writes: one record per logged step, one JSON line on stdout; process 1's
    # own final line arrives on stderr, prefixed.
    assert [r["step"] for r in records] == list(range(5, STEPS + 1, 5))
    assert [json.loads(line)["eval/loss"] for line in runs["two_stdout"].splitlines()
            if line.startswith("{")] == [records[-1]["eval/loss"]]
    assert "[process 1] {" in runs["two_stderr"]
    assert sorted(p.name for p in (runs["two"] / "checkpoints").iterdir()) == ["15", "30"]


def test_two_process_checkpoint_evaluates_in_one_process(runs):
    result = json.loads(run_cli("eval", "--workdir", runs["two"], devices=8).stdout)
    assert result["step"] == STEPS
    np.testing.assert_allclose(result["eval/loss"], read_metrics(runs["two"])[-1]["eval/loss"],
                               rtol=RTOL)


def test_one_process_checkpoint_resumes_under_two(runs, tmp_path):
    workdir = tmp_path / "resumed"
    run_cli(*train_args(workdir, STEPS // 2), devices=8)
    launch_local(*train_args(workdir))
    assert_curves_agree(read_metrics(workdir), read_metrics(runs["one"]), after_step=STEPS // 2)


@pytest.mark.parametrize("source", ["mnist1d", "text"])
def test_each_process_reads_only_its_rows(monkeypatch, text_file, source):
    """With 2 processes, process i gets rows [i*B/2, (i+1)*B/2) of the 1-process batch."""
    config = {"mnist1d": dict(name="mnist1d"),
              "text": dict(name="text", path=str(text_file), seq_len=16, eval_windows=40)}[source]
    batch_size = 8

    def batches(process_index, process_count):
        monkeypatch.setattr(jax, "process_index", lambda: process_index)
        monkeypatch.setattr(jax, "process_count", lambda: process_count)
        source_class = data.SOURCES[config["name"]]
        pipeline = source_class(**{k: v for k, v in config.items() if k != "name"}).pipeline(0)
        train = next(pipeline.train_iterator(3, batch_size))
        return train, next(iter(pipeline.eval_batches(batch_size)))

    whole = batches(0, 1)
    halves = [batches(i, 2) for i in range(2)]
    for kind in range(2):   # train, eval
        for key, value in whole[kind].items():
            assert all(len(h[kind][key]) == batch_size // 2 for h in halves), key
            np.testing.assert_array_equal(
                np.concatenate([h[kind][key] for h in halves]), value, err_msg=key)


@pytest.mark.parametrize("args, message", [
    (["--num_processes=0", "--", "train"], "--num_processes must be a positive integer"),
    (["--num_processes=2", "train", "--config", "x.py"], "needs `--` before the fmjax command"),
    (["--num_processes=2", "--"], "after `--` comes an fmjax command"),
    (["--num_processes=2", "--", "launch_local"], "after `--` comes an fmjax command"),
    (["--", "train"], "--num_processes is required"),
    (["--num_processes=2", "--devices=4", "--", "train"], "unknown argument --devices=4"),
])
def test_launch_local_bad_input_is_one_line(args, message):
    proc = run_cli("launch_local", *args, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_a_bad_config_key_fails_every_process_promptly(tmp_path):
    start = time.monotonic()
    proc = launch_local(*train_args(tmp_path / "w"), "--config.train.no_such_key=1", check=False)
    assert proc.returncode == 2
    assert time.monotonic() - start < 60
    assert "unknown config key --config.train.no_such_key" in proc.stderr
    assert not (tmp_path / "w").exists()


# Process 1 fails while process 0 waits for it in a collective. Without `failures_exit_at_once`
# process 1 sits at JAX's shutdown barrier: 30 s here, 5 minutes when process 0 is in a train step.
PEER_FAILS = """
import jax
from jax.experimental import multihost_utils
from fmjax.runtime import distributed
distributed.initialize_from_env()
with distributed.failures_exit_at_once():
    if jax.process_index() == 1:
        raise RuntimeError("process 1 fails")
    multihost_utils.sync_global_devices("process 1 never gets here")
"""


def test_a_failing_process_stops_the_others(capfd):
    start = time.monotonic()
    status = launch.launch_local(2, 1, [], program=(sys.executable, "-c", PEER_FAILS))
    assert status == 1
    assert time.monotonic() - start < 20   # about 3 s
    stderr = capfd.readouterr().err
    assert "[process 1] RuntimeError: process 1 fails" in stderr
    assert "process 1 exited with status 1; stopping the others" in stderr


SLEEPER = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(600)"
LAUNCH_SLEEPERS = (f"import sys; from fmjax.runtime import launch; sys.exit(launch.launch_local(2, 1, [], "
                   f"program=(sys.executable, '-c', {SLEEPER!r})))")


def test_processes_do_not_outlive_a_terminated_launcher():
    """SIGTERM to the launcher (a scheduler, `kill`) is passed on and takes its processes with
    it (these ignore nothing, so they end at once)."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCH_SLEEPERS], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids = [int(launcher.stdout.readline().split()[-1]),    # process 0: passed through
            int(launcher.stderr.readline().split()[-1])]    # process 1: "[process 1] pid N"
    launcher.terminate()
    assert launcher.wait(timeout=30) == 143
    for pid in pids:
        with pytest.raises(ProcessLookupError):   # gone (reaped by the launcher), not orphaned
            os.kill(pid, 0)
