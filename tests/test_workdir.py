"""One run per workdir: a second `fmjax train` on a busy workdir stops at once with one line
naming the first (host, pid), and changes nothing; a lock left by a killed run never blocks
the next one; an empty --workdir is refused rather than writing into the current directory."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, read_metrics, run_cli
from fmjax.errors import UserError
from fmjax.runtime import workdir_lock

FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.train.num_steps=1000",
         "--config.train.eval_every=500", "--config.checkpoint.every=500", "--noprogress"]


def snapshot(workdir) -> dict:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file()}


def test_a_second_train_on_a_busy_workdir_stops_and_names_the_first(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    first = subprocess.Popen([sys.executable, "-m", "fmjax", "train", "--workdir",
                              str(workdir), *FLAGS], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "metrics.jsonl").exists():   # it holds the lock and trains
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)   # however slow this machine, it is still running
        before = snapshot(workdir)
        second = run_cli("train", "--workdir", workdir, *FLAGS, check=False)
        assert snapshot(workdir) == before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2, second.stderr
    assert second.stderr == (
        f"fmjax: error: the workdir {workdir} is in use by another fmjax train (host "
        f"{socket.gethostname()}, pid {first.pid}, since "
        f"{json.loads((workdir / 'fmjax.lock').read_text())['since']}); wait for it to end, or "
        "use another --workdir\n")
    steps = [r["step"] for r in read_metrics(workdir)]
    assert steps == sorted(set(steps)) and steps[-1] == 1000
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1000", "500"]


def test_the_lock_is_held_until_released_and_a_dead_holder_leaves_none(tmp_path):
    (tmp_path / workdir_lock.LOCK_FILE).write_text('{"host": "x", "pid": 999999999, "since": 0}')
    with workdir_lock.hold(tmp_path):   # a file left by a killed run: no lock is held
        with pytest.raises(UserError, match=f"pid {os.getpid()}, since "):
            with workdir_lock.hold(tmp_path):
                pass
    with workdir_lock.hold(tmp_path):
        pass


def test_every_process_of_a_multi_process_run_stops_on_a_busy_workdir(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lock.hold(workdir):
        before = snapshot(workdir)
        proc = run_cli("launch_local", "--num_processes=2", "--", "train", "--workdir", workdir,
                       *FLAGS, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"fmjax: error: the workdir {workdir} is in use by another fmjax train" in proc.stderr
    assert snapshot(workdir) == before


@pytest.mark.parametrize("workdir", ["", " "])
def test_an_empty_workdir_is_refused(tmp_path, monkeypatch, workdir):
    monkeypatch.setenv("PYTHONPATH", str(REPO))   # run from tmp_path: this checkout's fmjax
    proc = run_cli("train", "--config", REPO / FLAGS[1], *FLAGS[2:], f"--workdir={workdir}",
                   check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("fmjax: error: --workdir is empty; give the run's directory (fmjax "
                           "would otherwise write into the current one)\n")
    assert not any(tmp_path.iterdir())
