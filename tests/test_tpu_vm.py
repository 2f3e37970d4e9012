"""tools/tpu_vm.py: --dry_run prints the exact gcloud commands and runs nothing; the commands it
sends to the workers work in a shell; --bucket mounts the bucket with gcsfuse; `all` deletes the VM
even when the run fails; bad input (an s3:// workdir too) gets one line and exit status 2. Nothing
here calls the real gcloud: --dry_run, or a stand-in gcloud on an otherwise empty PATH."""

import os
import shlex
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO

TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
WHERE = ["my-tpu", "--zone=us-central2-b"]
TRAIN = ["train", "--config", "experiments/mnist1d/cnn.py", "--workdir", "/gcs/my-bucket/run"]
RUN_COMMAND = ("nohup sh -c 'cd fmjax && FMJAX_DISTRIBUTED=auto .venv/bin/python -m fmjax train "
               "--config experiments/mnist1d/cnn.py --workdir /gcs/my-bucket/run; "
               "echo fmjax exited with status $?' > ~/fmjax.log 2>&1 < /dev/null & "
               "echo $! > ~/fmjax.pid")
LOGS_COMMAND = ("tail --pid=$(cat ~/fmjax.pid) -n +1 -F ~/fmjax.log; "
                "grep -qx \"fmjax exited with status 0\" ~/fmjax.log")
INSTALL_GCSFUSE = (
    'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com'
    '/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list > '
    "/dev/null && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee "
    "/usr/share/keyrings/cloud.google.asc > /dev/null && sudo apt-get update -q && "
    "sudo apt-get install -y -q gcsfuse")
MOUNT_BUCKET = ('mountpoint -q /gcs/my-bucket || { sudo mkdir -p /gcs/my-bucket && '
                'sudo chown "$(id -un)" /gcs/my-bucket && gcsfuse --implicit-dirs '
                "--rename-dir-limit=100000 --metadata-cache-ttl-secs=0 my-bucket /gcs/my-bucket; }")
# The VM's Python 3.10 is too old: uv makes a 3.12 venv in ~/fmjax/.venv and installs into it.
INSTALL = ("python3 -m pip install -q --user -U uv && python3 -m uv venv --python 3.12 .venv && "
           'python3 -m uv pip install --python .venv/bin/python -e ".[tfds,tpu,gcs]"')
GCSFUSE_SSH = [[*TPU, "ssh", *WHERE, "--worker=all", f"--command={INSTALL_GCSFUSE}"],
               [*TPU, "ssh", *WHERE, "--worker=all", f"--command={MOUNT_BUCKET}"]]


def tpu_vm(*args, tmp_path, path=None) -> subprocess.CompletedProcess:
    """Run the script with TMPDIR=tmp_path and PATH=`path` (default: an empty folder: no gcloud)."""
    empty = tmp_path / "empty_bin"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp_path), PATH=str(path or empty))
    return subprocess.run([sys.executable, str(REPO / "tools" / "tpu_vm.py"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def commands(proc: subprocess.CompletedProcess) -> list[list[str]]:
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def copy_and_install(tarball: str) -> list[list[str]]:
    return [
        ["tar", "-czf", tarball, "--exclude=.git", "--exclude=.venv", "--exclude=runs",
         "--exclude=__pycache__", "--exclude=*.egg-info", "--exclude=.pytest_cache",
         "--exclude=*.whl", "--exclude=build", "-C", str(REPO), "."],
        [*TPU, "scp", tarball, "my-tpu:fmjax.tar.gz", "--zone=us-central2-b", "--worker=all"],
        [*TPU, "ssh", *WHERE, "--worker=all",
         "--command=rm -rf fmjax && mkdir fmjax && tar -xzf fmjax.tar.gz -C fmjax && cd fmjax && "
         f"{INSTALL}"],
    ]


def test_dry_run_of_all_prints_every_command_and_runs_nothing(tmp_path):
    proc = tpu_vm("all", "--name", "my-tpu", "--zone", "us-central2-b", "--accelerator_type",
                  "v4-32", "--spot", "--bucket", "my-bucket", "--dry_run", "--", *TRAIN,
                  tmp_path=tmp_path)
    tarball = str(tmp_path / "fmjax-my-tpu.tar.gz")
    assert commands(proc) == [
        [*TPU, "create", *WHERE, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base",
         "--spot"],
        *GCSFUSE_SSH,
        *copy_and_install(tarball),
        [*TPU, "ssh", *WHERE, "--worker=all", f"--command={RUN_COMMAND}"],
        [*TPU, "ssh", *WHERE, "--worker=0", f"--command={LOGS_COMMAND}"],
        [*TPU, "delete", *WHERE, "--quiet"],
    ]
    assert proc.stderr == ""                      # workdir on the mounted bucket: no warning
    assert not os.path.exists(tarball)            # the tar command was printed, not run


@pytest.mark.parametrize("bucket", [[], ["--bucket", "my-bucket"]])
def test_setup_mounts_the_bucket_only_with_bucket(tmp_path, bucket):
    proc = tpu_vm("setup", "--name", "my-tpu", "--zone", "us-central2-b", *bucket, "--dry_run",
                  tmp_path=tmp_path)
    tarball = str(tmp_path / "fmjax-my-tpu.tar.gz")
    assert commands(proc) == (GCSFUSE_SSH if bucket else []) + copy_and_install(tarball)
    assert ("gcsfuse" in proc.stdout) == bool(bucket)


def test_dry_run_of_run_prints_one_ssh_to_all_workers(tmp_path):
    proc = tpu_vm("run", "--name", "my-tpu", "--zone", "us-central2-b", "--dry_run", "--",
                  *TRAIN, tmp_path=tmp_path)
    assert commands(proc) == [[*TPU, "ssh", *WHERE, "--worker=all", f"--command={RUN_COMMAND}"]]


def test_workdir_option_project_and_runtime_version(tmp_path):
    proc = tpu_vm("run", "--name", "my-tpu", "--zone", "us-central2-b", "--project", "lab",
                  "--workdir", "/gcs/my-bucket/run", "--dry_run", "--", *TRAIN[:3],
                  tmp_path=tmp_path)
    assert commands(proc) == [[*TPU, "ssh", *WHERE, "--project=lab", "--worker=all",
                               f"--command={RUN_COMMAND}"]]
    proc = tpu_vm("create", "--name", "my-tpu", "--zone", "us-central2-b", "--accelerator_type",
                  "v5litepod-16", "--dry_run", tmp_path=tmp_path)
    assert commands(proc) == [[*TPU, "create", *WHERE, "--accelerator-type=v5litepod-16",
                               "--version=v2-alpha-tpuv5-lite"]]


def test_a_workdir_not_on_a_mounted_bucket_is_warned_about_unless_shared(tmp_path):
    run = ["run", "--name", "my-tpu", "--zone", "z", "--dry_run"]
    proc = tpu_vm(*run, "--", *TRAIN[:3], "--workdir", "runs/cnn", tmp_path=tmp_path)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1
    assert proc.stderr == (
        "tpu_vm: warning: workdir runs/cnn is not on a bucket mounted with gcsfuse (--bucket NAME, "
        "--workdir /gcs/NAME/...): on each worker's own disk, a pod slice's workers do not share "
        "it and deleting the VM deletes it (on a file system every worker mounts, pass "
        "--shared_workdir_ok)\n")
    proc = tpu_vm(*run, "--shared_workdir_ok", "--", *TRAIN[:3], "--workdir", "/nfs/runs/cnn",
                  tmp_path=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["run", "--zone", "z", "--", *TRAIN], "required: --name"),
    (["launch", "--name", "t", "--zone", "z"], "invalid choice: 'launch'"),
    (["run", "--name", "t", "--zone", "z"], "needs the fmjax command after --"),
    (["run", "--name", "t", "--zone", "z", "--", *TRAIN[:3]], "no workdir"),
    (["run", "--name", "t", "--zone", "z", "--workdir", "/gcs/my-bucket/other", "--", *TRAIN],
     "two workdirs"),
    (["create", "--name", "t", "--zone", "z", "--", *TRAIN], "takes no fmjax arguments"),
    (["setup", "--name", "t", "--zone", "z", "--repo", "/nonexistent"], "neither a git URL"),
    (["run", "--name", "t", "--zone", "z", "--", *TRAIN[:3], "--workdir", "s3://b/run"],
     "workdir s3://b/run is a URL other than gs://; give gs://BUCKET/..., or mount the bucket on "
     "every worker with --bucket NAME (setup, all) and give --workdir /gcs/NAME/..."),
    (["all", "--name", "t", "--zone", "z", "--bucket", "b-1", "--workdir", "s3://b-1/run", "--",
      *TRAIN[:3]], "workdir s3://b-1/run is a URL"),
    (["all", "--name", "t", "--zone", "z", "--", *TRAIN], "`all` mounts nothing on the new VM"),
    (["all", "--name", "t", "--zone", "z", "--bucket", "other", "--", *TRAIN],
     "`all` mounts only /gcs/other on the new VM"),
    (["setup", "--name", "t", "--zone", "z", "--bucket", "gs://my-bucket"], "not a bucket name"),
    (["run", "--name", "t", "--zone", "z", "--bucket", "my-bucket", "--", *TRAIN],
     "unrecognized arguments: --bucket"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    proc = tpu_vm(*args, "--dry_run", tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("tpu_vm: error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr


def remote_command(proc) -> str:
    [ssh] = commands(proc)
    return ssh[-1].removeprefix("--command=")


@pytest.mark.parametrize("status", [0, 3])
def test_worker_commands_start_in_background_and_logs_reports_the_status(tmp_path, status):
    """Run `run`'s and `logs`' worker commands in a local shell, with HOME as the worker's home and
    a stand-in fmjax that prints its arguments and environment."""
    home = tmp_path / "home"
    (home / "fmjax" / "fmjax").mkdir(parents=True)
    (home / "fmjax" / "fmjax" / "__init__.py").write_text("")
    (home / "fmjax" / "fmjax" / "__main__.py").write_text(
        "import os, sys\nprint('args', sys.argv[1:], os.environ.get('FMJAX_DISTRIBUTED'))\n"
        f"sys.exit({status})\n")
    (home / "fmjax" / ".venv" / "bin").mkdir(parents=True)
    (home / "fmjax" / ".venv" / "bin" / "python").symlink_to(sys.executable)
    env = dict(os.environ, HOME=str(home))
    where = ["--name", "my-tpu", "--zone", "z", "--dry_run"]
    start = remote_command(tpu_vm("run", *where, "--", *TRAIN, tmp_path=tmp_path))
    follow = remote_command(tpu_vm("logs", *where, tmp_path=tmp_path))

    started = subprocess.run(["bash", "-c", start], env=env, cwd=home, timeout=30)
    followed = subprocess.run(["bash", "-c", follow], env=env, cwd=home, capture_output=True,
                              text=True, timeout=60)
    assert started.returncode == 0
    assert followed.stdout.splitlines() == [
        f"args {TRAIN!r} auto", f"fmjax exited with status {status}"]
    assert (followed.returncode == 0) == (status == 0)


def stand_ins(bin_dir, **scripts) -> dict:
    """Shell scripts in bin_dir named after the commands they stand in for; returns an
    environment with bin_dir first on PATH."""
    bin_dir.mkdir()
    for name, script in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_gcsfuse_install_command_adds_the_repo_for_this_release(tmp_path):
    """A stand-in sudo records its arguments and, for tee, what it is given to write."""
    calls = tmp_path / "calls"
    env = stand_ins(tmp_path / "bin", lsb_release="echo jammy", curl='echo "KEY from $*"',
                    sudo=f'echo "sudo $*" >> {calls}; [ "$1" != tee ] || cat >> {calls}')
    subprocess.run(["bash", "-c", INSTALL_GCSFUSE], env=env, check=True, timeout=30)
    assert calls.read_text().splitlines() == [
        "sudo tee /etc/apt/sources.list.d/gcsfuse.list",
        "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt"
        " gcsfuse-jammy main",
        "sudo tee /usr/share/keyrings/cloud.google.asc",
        "KEY from -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg",
        "sudo apt-get update -q",
        "sudo apt-get install -y -q gcsfuse",
    ]


@pytest.mark.parametrize("mounted", [False, True])
def test_mount_command_mounts_once_as_the_ssh_user(tmp_path, mounted):
    """Running setup again (an ssh drop, a second try) leaves an existing mount alone."""
    calls = tmp_path / "calls"
    record = f'echo "$(basename "$0") $*" >> {calls}'
    env = stand_ins(tmp_path / "bin", mountpoint=f"{record}; exit {0 if mounted else 1}",
                    sudo=record, gcsfuse=record)
    subprocess.run(["bash", "-c", MOUNT_BUCKET], env=env, check=True, timeout=30)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    mount = ["sudo mkdir -p /gcs/my-bucket", f"sudo chown {user} /gcs/my-bucket",
             "gcsfuse --implicit-dirs --rename-dir-limit=100000 --metadata-cache-ttl-secs=0 "
             "my-bucket /gcs/my-bucket"]
    assert calls.read_text().splitlines() == ["mountpoint -q /gcs/my-bucket"] + (
        [] if mounted else mount)


def test_the_local_copy_leaves_out_the_venv_runs_and_wheels(tmp_path):
    repo = tmp_path / "repo"
    for name in ["pyproject.toml", "fmjax/runs.py", "experiments/a.py", ".venv/lib/big",
                 "runs/cnn/metrics.jsonl", ".git/HEAD", "fmjax/__pycache__/x.pyc",
                 "fmjax-0.1-py3-none-any.whl", "dist/fmjax-0.1-py3-none-any.whl"]:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    proc = tpu_vm("setup", "--name", "my-tpu", "--zone", "z", "--repo", str(repo), "--dry_run",
                  tmp_path=tmp_path)
    tar = commands(proc)[0]
    assert tar[0] == "tar"
    subprocess.run(tar, check=True)
    with tarfile.open(tar[2]) as archive:
        files = sorted(m.name for m in archive.getmembers() if m.isfile())
    assert files == ["./experiments/a.py", "./fmjax/runs.py", "./pyproject.toml"]


@pytest.mark.parametrize("keep", [False, True])
def test_all_deletes_the_vm_when_the_run_fails_unless_keep(tmp_path, keep):
    """A stand-in gcloud records its calls and fails the `logs` step (the run exited non-zero)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(
        f'#!/bin/sh\necho "$4 $5" >> {calls}\ncase "$*" in *--worker=0*) exit 1;; esac\n')
    (bin_dir / "gcloud").chmod(0o755)
    proc = tpu_vm("all", "--name", "my-tpu", "--zone", "z", "--repo",
                  "https://github.com/example/fmjax.git", "--bucket", "my-bucket",
                  *(["--keep"] if keep else []), "--", *TRAIN, tmp_path=tmp_path, path=bin_dir)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith("tpu_vm: error: status 1 from gcloud")
    # gcsfuse install, mount, clone + install (no scp), run, logs
    steps = ["create my-tpu"] + ["ssh my-tpu"] * 5
    assert calls.read_text().splitlines() == steps + ([] if keep else ["delete my-tpu"])
