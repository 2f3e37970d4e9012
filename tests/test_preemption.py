"""Stop signals lose nothing. SIGTERM (what a spot TPU VM, Kubernetes or SLURM sends before a kill)
and SIGINT (Ctrl-C): fmjax finishes the device call, saves a checkpoint, says so in one line and
exits with 128 + the signal; the same command resumes and ends exactly where an uninterrupted run
ends. With several processes every host saves the same step. Before the train loop there is
nothing to save: one line, the same exit status.

Every run uses the shipped MNIST-1D MLP's `train.steps_per_call` (250), `log_every`, `eval_every`
and `checkpoint.every`: with one device call of 250 steps, the step moves in jumps, which is what
JAX's multi-host preemption sync must cope with. Signals are sent early (after the first log
line, at step 250, or the first checkpoint), so with 12 calls in the run they land mid-run.
"""

import errno
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, run_cli
from fmjax import checkpoint, runs
from fmjax.runtime import launch
from test_train import model_metrics

# Dropout and a schedule make exact resumption non-trivial.
FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.train.num_steps=3000",
         "--config.model.dropout_rate=0.1", "--config.optimizer.schedule=warmup_cosine",
         "--config.optimizer.warmup_steps=100", "--noprogress"]
# Two processes of one device each, the batch split between them: one gradient all-reduce
# across processes per step (gloo), and Orbax's save is collective. Signals are sent once a
# checkpoint is being written: Orbax's save used to knock JAX's preemption agreement off (it
# passes the step where fmjax passes its count of device calls). Twelve device calls of 250
# steps, a checkpoint every two: each stop leaves calls to spare however late the signal lands.
TWO_PROCESSES_STEPS = 3000
TWO_PROCESSES = [*FLAGS, "--config.mesh.data=2", "--config.checkpoint.every=500"]
EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}
MESSAGE = {signal.SIGTERM: "preempted (SIGTERM)", signal.SIGINT: "interrupted (SIGINT)"}


def _env(**extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env.pop("XLA_FLAGS", None)
    return env


def _start(*args, env=None, **kwargs) -> subprocess.Popen:
    """`python -m fmjax ARGS` in the background, its output captured."""
    return subprocess.Popen([sys.executable, "-m", "fmjax", *map(str, args)], cwd=REPO,
                            env=env or _env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def _wait_until(condition, proc, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never got there"
        time.sleep(0.02)


def _logged(workdir):
    """Has training written its first log line (step 250)?"""
    metrics = workdir / "metrics.jsonl"
    return lambda: metrics.exists() and metrics.read_text().strip()


def _saving_after(workdir, step: int):
    """Has Orbax begun to write a checkpoint after `step` (its directory, or its temporary one)?"""
    directory = workdir / "checkpoints"
    return lambda: directory.is_dir() and any(
        int(p.name.split(".")[0]) > step for p in directory.iterdir()
        if p.name.split(".")[0].isdigit())


def _stopped_at(message: str) -> int:
    return int(message.split("at step ")[1].split(":")[0])


def _fmjax_lines(stderr: str) -> list[str]:
    """fmjax's own lines; a multi-process run's stderr also holds gloo's and JAX's C++ logs."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if "fmjax:" in line]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The workdir of the same run, never stopped."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    run_cli("train", "--workdir", workdir, *FLAGS)
    return workdir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_says_one_line_and_the_same_command_resumes_exactly(tmp_path, straight,
                                                                           signum):
    """SIGTERM is sent twice, as `timeout` sends it (to the process, then to its group): the
    repeat changes nothing. Ctrl-C once."""
    workdir = tmp_path / "stopped"
    proc = _start("train", "--workdir", workdir, *FLAGS)
    _wait_until(_logged(workdir), proc)
    proc.send_signal(signum)
    if signum == signal.SIGTERM:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STATUS[signum], stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fmjax: {MESSAGE[signum]} at step "), stderr
    assert lines[0].endswith(f": checkpoint saved in {workdir}; run the same command again to "
                             "resume")
    stopped_at = _stopped_at(lines[0])
    assert 250 <= stopped_at < 3000
    assert checkpoint.read_only_manager(workdir).all_steps()[-1] == stopped_at

    resumed = run_cli("train", "--workdir", workdir, *FLAGS)
    assert f"resuming from the checkpoint at step {stopped_at}" in resumed.stdout
    assert model_metrics(workdir) == model_metrics(straight)
    jax.tree.map(np.testing.assert_array_equal, runs.load(workdir).params,
                 runs.load(straight).params)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_startup_is_one_line(tmp_path, signum):
    """The dataset file is a FIFO that nobody writes: the process waits in data loading, before
    the train loop, until the signal comes; nothing is written."""
    cache = tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / "mnist1d.npz")
    proc = _start("train", "--workdir", tmp_path / "w", *FLAGS, env=_env(FMJAX_CACHE_DIR=cache))
    writer = None
    try:
        while writer is None:   # opening the write end succeeds once fmjax has the read end open
            try:
                writer = os.open(cache / "mnist1d.npz", os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                assert e.errno == errno.ENXIO and proc.poll() is None, proc.communicate()
                time.sleep(0.02)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        proc.kill()
    assert proc.returncode == EXIT_STATUS[signum]
    assert stderr == f"fmjax: {MESSAGE[signum]}\n"
    assert not (tmp_path / "w").exists()


def _launch_local(*args) -> list[str]:
    return [sys.executable, "-m", "fmjax", "launch_local", "--num_processes=2", "--",
            *map(str, args)]


def _stop_one_of_two_processes(workdir) -> list[tuple[str, int]]:
    """Two processes started directly (in their own sessions, as launch_local starts them);
    SIGTERM to process 1 only, once the first checkpoint is being written: JAX's preemption
    service must stop both at one step. [(stderr, exit status)] per process."""
    train = ["train", "--workdir", workdir, *TWO_PROCESSES]
    port = launch.free_port()
    procs = [_start(*train, env=launch.child_env(port, 2, i, 1), start_new_session=True)
             for i in range(2)]
    try:
        _wait_until(_saving_after(workdir, 0), procs[0])
        procs[1].send_signal(signal.SIGTERM)
        return [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
    finally:
        for p in procs:
            p.kill()


def _stop_launch_local_like_timeout(workdir) -> tuple[str, int]:
    """The same command under `launch_local`, stopped as `timeout` stops it: SIGTERM to the
    launcher once a checkpoint is being written, then to the launcher's whole process group
    once the processes are saving again. (stderr, exit status)."""
    before = max(checkpoint.read_only_manager(workdir).all_steps(), default=0)
    launcher = subprocess.Popen(_launch_local("train", "--workdir", workdir, *TWO_PROCESSES),
                                cwd=REPO, env=_env(), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_until(_saving_after(workdir, before), launcher)
        newest = max(int(p.name.split(".")[0]) for p in (workdir / "checkpoints").iterdir())
        launcher.send_signal(signal.SIGTERM)
        _wait_until(_saving_after(workdir, newest), launcher)
        os.killpg(launcher.pid, signal.SIGTERM)
        return launcher.communicate(timeout=120)[1], launcher.returncode
    finally:
        launcher.kill()


def _same_stop(messages: list[str]) -> int:
    """The one step at which every process says it stopped."""
    steps = {_stopped_at(m) for m in messages}
    assert len(steps) == 1, messages
    return steps.pop()


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    messages = []
    for stderr, status in _stop_one_of_two_processes(tmp_path / "run"):
        assert status == 143, stderr
        messages += _fmjax_lines(stderr)
    assert len(messages) == 2 and all(m.startswith("fmjax: preempted (SIGTERM) at step ")
                                      for m in messages), messages
    step = _same_stop(messages)
    assert 250 <= step < TWO_PROCESSES_STEPS
    assert max(checkpoint.read_only_manager(tmp_path / "run").all_steps()) == step


@pytest.mark.slow   # about 2 minutes on 2 cores; the fake-process test below covers the launcher
def test_two_process_run_stopped_twice_ends_like_one_never_stopped(tmp_path):
    """Stopped as above, then under `launch_local` as `timeout` stops it (both processes save
    the same, later step), then resumed to the end: the metrics of an uninterrupted 2-process
    run, exactly."""
    workdir = tmp_path / "run"
    first = _same_stop([m for stderr, _ in _stop_one_of_two_processes(workdir)
                        for m in _fmjax_lines(stderr)])
    stderr, status = _stop_launch_local_like_timeout(workdir)
    assert status == 143, stderr
    messages = _fmjax_lines(stderr)
    assert sorted(m.startswith("[process 1] fmjax: preempted (SIGTERM) at step ")
                  for m in messages) == [False, True], messages
    assert max(checkpoint.read_only_manager(workdir).all_steps()) == _same_stop(messages) > first
    for run in (workdir, tmp_path / "straight"):
        subprocess.run(_launch_local("train", "--workdir", run, *TWO_PROCESSES), cwd=REPO,
                       env=_env(), check=True, capture_output=True, timeout=600)
    assert model_metrics(workdir) == model_metrics(tmp_path / "straight")


# A stand-in for fmjax under `launch_local`: on SIGTERM it "saves" (takes a second, so further
# signals to the launcher arrive meanwhile), then exits 143; it reports every SIGTERM it gets.
SAVER = """
import os, signal, sys, time
received = []
signal.signal(signal.SIGTERM, lambda *_: received.append(1))
print("ready", flush=True)
while not received:
    time.sleep(0.01)
print("saving", flush=True)
time.sleep(1.0)
print(f"saved after {len(received)} SIGTERM", flush=True)
sys.exit(143)
"""
LAUNCH_SAVERS = (f"import sys; from fmjax.runtime import launch; sys.exit(launch.launch_local(2, 1, [], "
                 f"program=(sys.executable, '-c', {SAVER!r})))")


@pytest.mark.parametrize("signum, group", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_launch_local_gives_every_process_the_whole_grace_period(signum, group):
    """A scheduler's SIGTERM to the launcher, or a terminal's Ctrl-C to its whole foreground
    group: the processes, in their own sessions, get exactly one SIGTERM each, from the
    launcher, and however many signals follow, the whole time to save."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCH_SAVERS], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    try:
        assert launcher.stdout.readline() == "ready\n"             # process 0: passed through
        assert launcher.stderr.readline() == "[process 1] ready\n"
        (os.killpg if group else os.kill)(launcher.pid, signum)
        assert launcher.stdout.readline() == "saving\n"
        assert launcher.stderr.readline() == "[process 1] saving\n"
        for again in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(launcher.pid, again)
            os.killpg(launcher.pid, again)
        stdout, stderr = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    assert launcher.returncode == 128 + signum, stderr
    assert stdout == "saved after 1 SIGTERM\n"
    assert stderr == "[process 1] saved after 1 SIGTERM\n"
