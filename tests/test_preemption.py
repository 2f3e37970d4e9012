"""SIGTERM (what a spot TPU VM, Kubernetes or SLURM sends before a kill): fmjax finishes the
step, saves a checkpoint, says so, exits with status 143 well within 30 s; the same command
resumes and ends exactly where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import REPO, run_cli
from fmjax import checkpoint, runs
from test_train import model_metrics

# One optimizer step per device call, so there is a preemption check every step; dropout and a
# schedule make exact resumption non-trivial.
FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.train.num_steps=3000",
         "--config.train.steps_per_call=1", "--config.train.log_every=100",
         "--config.train.eval_every=1000", "--config.checkpoint.every=1000",
         "--config.model.dropout_rate=0.1", "--config.optimizer.schedule=warmup_cosine",
         "--config.optimizer.warmup_steps=100", "--noprogress"]


def _wait_for_first_log(workdir, proc, timeout=120.0):
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "training never logged"
        time.sleep(0.02)


def test_sigterm_saves_exits_and_the_same_command_resumes_exactly(tmp_path):
    run_cli("train", "--workdir", tmp_path / "straight", *FLAGS)

    workdir = tmp_path / "preempted"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen([sys.executable, "-m", "fmjax.main", "train", "--workdir",
                             str(workdir), *FLAGS], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_first_log(workdir, proc)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert proc.returncode == 143, stderr
    message = stderr.strip().splitlines()[-1]
    assert "preempted (SIGTERM) at step" in message, message
    stopped_at = int(message.split("at step ")[1].split(":")[0])
    assert 100 <= stopped_at < 3000
    assert checkpoint.read_only_manager(workdir).all_steps()[-1] == stopped_at

    resumed = run_cli("train", "--workdir", workdir, *FLAGS)
    assert f"resuming from the checkpoint at step {stopped_at}" in resumed.stdout
    assert model_metrics(workdir) == model_metrics(tmp_path / "straight")
    jax.tree.map(np.testing.assert_array_equal, runs.load(workdir).params,
                 runs.load(tmp_path / "straight").params)


def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tmp_path):
    """Two processes (4 CPU devices each), SIGTERM to process 1 only: JAX's preemption sync
    point makes both save the same step and exit 143; the run then resumes under launch_local
    and ends where an uninterrupted 2-process run ends."""
    from fmjax import launch
    flags = [*FLAGS, "--config.mesh.data=2", "--config.mesh.fsdp=4",
             "--config.train.batch_size=96", "--config.train.num_steps=200",
             "--config.train.log_every=20"]   # gloo collectives: ~50 ms a step
    port = launch.free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "fmjax.main", "train", "--workdir",
                               str(tmp_path / "run"), *flags], cwd=REPO, text=True,
                              env=launch.child_env(port, 2, i, 4), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for i in range(2)]
    try:
        _wait_for_first_log(tmp_path / "run", procs[0])
        procs[1].send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    messages = [err.strip().splitlines()[-1] for _, err in outputs]
    assert [p.returncode for p in procs] == [143, 143], messages
    steps = {int(m.split("at step ")[1].split(":")[0]) for m in messages}
    assert len(steps) == 1, messages
    assert checkpoint.read_only_manager(tmp_path / "run").all_steps()[-1] == steps.pop()

    two_processes = ["launch_local", "--num_processes=2", "--devices_per_process=4", "--", "train"]
    run_cli(*two_processes, "--workdir", tmp_path / "run", *flags)
    run_cli(*two_processes, "--workdir", tmp_path / "straight", *flags)
    assert model_metrics(tmp_path / "run") == model_metrics(tmp_path / "straight")
