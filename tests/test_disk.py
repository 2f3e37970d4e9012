"""Disk trouble: a workdir that cannot be written fails in one line with exit status 2 and nothing
half-written; a checkpoint write that fails mid-run (disk full) stops training with an error that
names the checkpoint's step and directory, and the checkpoints before it stay intact: they
restore bit-identical to what was saved, and the run resumes from them once there is space.

Root ignores file permissions, so as root the permission test runs fmjax in a user namespace of
its own (`unshare -U`: there the files' owner bits apply to it); the real full disk and read-only
workdir tests need a private mount namespace (`unshare -m`, root). Each is skipped where its
namespace cannot be made."""

import errno
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import atomicity

from conftest import REPO, run_cli
from fmjax import checkpoint, configs, runs
from fmjax.errors import WorkdirError
from fmjax.train import train_and_evaluate

FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.train.steps_per_call=5",
         "--config.train.log_every=5", "--config.train.eval_every=10",
         "--config.checkpoint.every=10", "--config.checkpoint.keep=5", "--noprogress"]
ENOSPC = "No space left on device"


def one_line_failure(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("fmjax: error: "), proc.stderr[-3000:]
    return lines[0]


def snapshot(directory) -> dict:
    """{relative path: bytes} of every file under `directory`."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def params_at(workdir, step: int):
    return jax.device_get(runs.load(workdir, step).params)


def assert_same_params(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ---- A workdir that cannot be written at all. ---------------------------------------------------

def test_workdir_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_line_failure(run_cli("train", *FLAGS, "--config.train.num_steps=10",
                                    "--workdir", blocker / "run", check=False))
    assert f"cannot write to the workdir {blocker / 'run'}: Not a directory" in line
    assert list(tmp_path.iterdir()) == [blocker] and blocker.read_text() == "not a directory"


def run_unprivileged(*args) -> subprocess.CompletedProcess:
    """`fmjax ARGS` as a user that file permissions bind (as root: in a user namespace)."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("unshare") or subprocess.run(["unshare", "-U", "true"]).returncode:
            pytest.skip("root ignores file permissions, and `unshare -U` is not available")
        prefix = ["unshare", "-U"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([*prefix, sys.executable, "-m", "fmjax", *map(str, args)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_unwritable_parent_and_read_only_run(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    run = tmp_path / "run"
    run_cli("train", *FLAGS, "--config.train.num_steps=10", "--workdir", run)
    before = snapshot(run)
    for path in (locked, *run.rglob("*"), run):
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        line = one_line_failure(run_unprivileged("train", *FLAGS, "--config.train.num_steps=10",
                                                 "--workdir", locked / "run"))
        assert "cannot write to the workdir" in line and "Permission denied" in line
        assert not any(locked.iterdir())
        line = one_line_failure(run_unprivileged("train", *FLAGS, "--config.train.num_steps=20",
                                                 "--workdir", run))
        assert f"cannot write to the workdir {run}: Permission denied" in line
        assert snapshot(run) == before
    finally:
        for path in (locked, run, *run.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)


# ---- A checkpoint write that fails mid-run (simulated: in-process, any user). --------------------

def small_config(num_steps: int = 40):
    return configs.experiment(
        model=dict(name="mlp"), data=dict(name="mnist1d"),
        train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=200, log_every=5,
                   eval_every=10, steps_per_call=5),
        checkpoint=dict(every=10, keep=5))


def _fail_on_second_save(monkeypatch):
    """The manager's own save raises ENOSPC for the second checkpoint (step 20)."""
    save = ocp.CheckpointManager.save

    def failing(self, step, *args, **kwargs):
        if step == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, step, *args, **kwargs)
    monkeypatch.setattr(ocp.CheckpointManager, "save", failing)


def _fail_in_background_commit(monkeypatch):
    """Checkpoint 20's files are written, then its background commit fails the way TensorStore
    reports a full disk; the error surfaces at the next save (step 30)."""
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def failing(self):
        if self.get_final().name == "20":
            raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "params.head.kernel/0" in OCDBT '
                             f'database: {ENOSPC} [os_error_code=\'28\']')
        return await finalize(self)
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", failing)


@pytest.mark.parametrize("inject", [_fail_on_second_save, _fail_in_background_commit],
                         ids=["save", "background commit"])
def test_failed_checkpoint_write_stops_and_keeps_the_earlier_one(tmp_path, monkeypatch, inject):
    saved = {}
    save = checkpoint.save

    def remembering_save(manager, step, state, *args):
        saved[step] = jax.device_get(state.params)
        return save(manager, step, state, *args)
    monkeypatch.setattr(checkpoint, "save", remembering_save)
    inject(monkeypatch)
    with pytest.raises(WorkdirError) as failure:
        train_and_evaluate(small_config(), tmp_path, show_progress=False)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write checkpoint 20 to {tmp_path / 'checkpoints'}: {ENOSPC}")
    assert "intact checkpoints: [10]" in message
    assert checkpoint.read_only_manager(tmp_path).all_steps() == [10]
    assert_same_params(params_at(tmp_path, 10), saved[10])

    monkeypatch.undo()   # space again: the same command resumes from checkpoint 10
    train_and_evaluate(small_config(), tmp_path, show_progress=False)
    train_and_evaluate(small_config(), tmp_path / "straight", show_progress=False)
    assert_same_params(params_at(tmp_path, 40), params_at(tmp_path / "straight", 40))


# ---- A real full disk and a real read-only workdir (private mounts; root). -----------------------

def _private_mounts_work(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs "
                               f"{probe}"], capture_output=True).returncode == 0
    except OSError:   # no unshare
        return False


@pytest.fixture
def private_mounts(tmp_path):
    if not _private_mounts_work(tmp_path):
        pytest.skip("needs `unshare -m` and mount (root in a privileged container)")


def fmjax_in_private_mount(setup: str, *args, cwd=REPO) -> subprocess.CompletedProcess:
    """`fmjax ARGS` after the shell commands `setup`, in a mount namespace of its own (the mounts
    vanish with it)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    command = " ".join(f"'{a}'" for a in (sys.executable, "-m", "fmjax", *map(str, args)))
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{setup} && {command}"], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_real_full_disk(tmp_path, private_mounts):
    """On a tmpfs with room for about one and a half checkpoints: exit status 2, and the whole
    of stderr is fmjax's one line naming the checkpoint that did not fit (Orbax's and
    TensorStore's own reports of it stay off the console); the checkpoints before it restore
    bit-identical to an unhindered run's, and the run resumes from them on a disk with space."""
    straight = tmp_path / "straight"
    run_cli("train", *FLAGS, "--config.train.num_steps=40", "--workdir", straight)
    checkpoint_kb = sum(p.stat().st_blocks * 512 for p in (straight / "checkpoints" / "10")
                        .rglob("*")) // 1024
    # each eval's details (a classifier's curves, fmjax/metrics/eval_details.py) take room too
    details_kb = (straight / "eval_details" / "eval_00000010.json").stat().st_blocks // 2
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    proc = fmjax_in_private_mount(
        f"mount -t tmpfs -o size={checkpoint_kb * 3 // 2 + details_kb + 32}k tmpfs {disk} && "
        f"trap 'cp -a {disk}/run {copy}' EXIT",
        "train", *FLAGS, "--config.train.num_steps=40", "--workdir", disk / "run")
    errors = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    intact = checkpoint.read_only_manager(copy).all_steps()
    failed = int(errors[0].split("cannot write checkpoint ")[1].split()[0])
    assert errors[0].startswith(f"fmjax: error: cannot write checkpoint {failed} to "
                                f"{disk / 'run' / 'checkpoints'}: {ENOSPC}; training stopped "
                                f"(intact checkpoints: {intact})")
    assert intact and failed not in intact
    for step in intact:
        assert_same_params(params_at(copy, step), params_at(straight, step))
    run_cli("train", *FLAGS, "--config.train.num_steps=40", "--workdir", copy)
    assert_same_params(params_at(copy, 40), params_at(straight, 40))


def test_real_read_only_workdir(tmp_path, private_mounts):
    run = tmp_path / "run"
    run_cli("train", *FLAGS, "--config.train.num_steps=10", "--workdir", run)
    before = snapshot(run)
    proc = fmjax_in_private_mount(f"mount --bind {run} {run} && mount -o remount,ro,bind {run}",
                                  "train", *FLAGS, "--config.train.num_steps=20", "--workdir", run)
    line = one_line_failure(proc)
    assert f"cannot write to the workdir {run}: Read-only file system" in line
    assert snapshot(run) == before
