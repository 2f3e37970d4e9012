"""Run an fmjax experiment on a Cloud TPU VM (one host or a pod slice): create, setup, run, delete.

    python tools/tpu_vm.py all --name my-tpu --zone us-central2-b --accelerator_type v4-32 --spot \\
        --bucket my-bucket -- train --config experiments/mnist1d/cnn.py \\
        --workdir /gcs/my-bucket/runs/cnn --noprogress

`all` creates the VM, copies this repo to every worker and installs it with its TPU extra into
~/fmjax/.venv, a Python 3.12 environment made by uv (the v4 image's Python 3.10 is too old), with
--bucket also mounting that Cloud Storage bucket on every worker at /gcs/BUCKET with gcsfuse
(`setup`), starts the same fmjax command on every worker at once with that environment's Python
(`run`: in the background under nohup, so an ssh drop does not stop it, with FMJAX_DISTRIBUTED=auto
so JAX finds the other hosts, a log ~/fmjax.log per worker), follows worker 0's log until the
run ends (`logs`), and deletes the VM, also when a step fails or on Ctrl-C, unless --keep. Each
step is a subcommand of its own. --dry_run prints the exact commands, one per line, and runs
nothing.

A pod slice's workers share nothing on disk: give a gs://BUCKET/... workdir, or put it on a
bucket mounted with --bucket (the VM's service account needs write access to the bucket either
way), or on a shared file system of your own (--shared_workdir_ok). A workdir on a
worker's own disk is also lost with the VM. Spot VMs get SIGTERM before they are preempted and
fmjax then writes a checkpoint: create a VM again, `setup` with the same --bucket, and `run` the
same command with the same workdir to resume from the latest checkpoint.
"""

import argparse
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Runtime ("software") versions for JAX, from Google's "TPU software versions" page; v4 and older
# use tpu-ubuntu2204-base.
RUNTIME_VERSIONS = {"v6e": "v2-alpha-tpuv6e", "v5p": "v2-alpha-tpuv5",
                    "v5litepod": "v2-alpha-tpuv5-lite"}
# What a local --repo copy leaves out (mirrors .gitignore; .venv alone is gigabytes).
EXCLUDE = (".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache", "*.whl",
           "build")
MOUNT_ROOT = "/gcs"   # --bucket B is mounted at /gcs/B on every worker
# Cloud Storage FUSE for Ubuntu (22.04 on TPU VMs), following the Debian/Ubuntu steps of Google's
# "Install Cloud Storage FUSE" page (cloud.google.com/storage/docs/gcsfuse-install; the gcsfuse
# repo's docs/installing.md has the same with the older apt-key): the gcsfuse apt repository for
# this release signed by Google's key, then the gcsfuse package (-y: no prompt over ssh).
GCSFUSE_INSTALL = (
    'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] '
    'https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" '
    "| sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null && "
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg "
    "| sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null && "
    "sudo apt-get update -q && sudo apt-get install -y -q gcsfuse")
# gcsfuse options (gcsfuse docs: semantics.md and the gcsfuse CLI page): --implicit-dirs shows
# folders written by other tools; Orbax commits a checkpoint by renaming its temporary directory,
# which gcsfuse refuses on a flat bucket unless --rename-dir-limit allows it (done non-atomically,
# object by object); each worker has its own mount, and cached metadata is only safe when one
# mount writes, so --metadata-cache-ttl-secs=0.
GCSFUSE_OPTIONS = ("--implicit-dirs", "--rename-dir-limit=100000", "--metadata-cache-ttl-secs=0")
# tpu-ubuntu2204-base (v4) ships Python 3.10 without its venv module; jax 0.10 and fmjax need
# >= 3.11. uv, pip-installed for the ssh user, makes ~/fmjax/.venv with a Python it downloads,
# then installs fmjax into it. For Python 3.12 on manylinux_2_31 x86_64, `uv pip compile`
# resolves fmjax[tfds,tpu] to jax 0.11.2, libtpu 0.0.48.1 and tensorflow-cpu 2.21.0.
PYTHON_VERSION = "3.12"
VENV_PYTHON = ".venv/bin/python"   # relative to ~/fmjax, where `run` starts fmjax
INSTALL = (f"python3 -m pip install -q --user -U uv && "
           f"python3 -m uv venv --python {PYTHON_VERSION} .venv && "
           f'python3 -m uv pip install --python {VENV_PYTHON} -e ".[tfds,tpu,gcs]"')
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
LOG = "~/fmjax.log"
PID = "~/fmjax.pid"
DONE = "fmjax exited with status"   # the log's last line, written when the command ends
RESUME = ("Spot VMs get SIGTERM before preemption and fmjax then writes a checkpoint; running the "
          "same fmjax command with the same workdir again resumes from the latest checkpoint.")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"tpu_vm: error: {message}\n")   # one line, no usage block


def run(cmd: list[str], dry_run: bool) -> None:
    """Print the command (--dry_run), or echo it to stderr and run it, raising if it fails."""
    if dry_run:
        print(shlex.join(cmd))
        return
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def gcloud(args, verb: str, targets: list[str], *flags: str) -> list[str]:
    """`gcloud compute tpus tpu-vm VERB TARGETS --zone=... [--project=...] FLAGS`."""
    project = [f"--project={args.project}"] if args.project else []
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *targets, f"--zone={args.zone}",
            *project, *flags]


def ssh(args, worker: str, command: str) -> list[str]:
    return gcloud(args, "ssh", [args.name], f"--worker={worker}", f"--command={command}")


def create(args) -> None:
    version = args.version or RUNTIME_VERSIONS.get(args.accelerator_type.split("-")[0],
                                                   "tpu-ubuntu2204-base")
    spot = ["--spot"] if args.spot else []
    run(gcloud(args, "create", [args.name], f"--accelerator-type={args.accelerator_type}",
               f"--version={version}", *spot), args.dry_run)


def mount_point(bucket: str) -> str:
    return f"{MOUNT_ROOT}/{bucket}"


def mount_bucket(args) -> None:
    """Install gcsfuse on every worker and mount --bucket at /gcs/BUCKET as the ssh user (a FUSE
    mount is only readable by the user who mounted it); a bucket already mounted is left alone."""
    run(ssh(args, "all", GCSFUSE_INSTALL), args.dry_run)
    where = shlex.quote(mount_point(args.bucket))
    gcsfuse = shlex.join(["gcsfuse", *GCSFUSE_OPTIONS, args.bucket, mount_point(args.bucket)])
    run(ssh(args, "all", f"mountpoint -q {where} || {{ sudo mkdir -p {where} && "
                         f'sudo chown "$(id -un)" {where} && {gcsfuse}; }}'), args.dry_run)


def setup(args) -> None:
    """Mount --bucket (if given), put the repo in ~/fmjax on every worker (a copy of the local
    tree, or a clone), install."""
    if args.bucket:
        mount_bucket(args)   # first: a wrong bucket name fails before the long install
    if is_url(args.repo):
        fetch = f"rm -rf fmjax && git clone --depth=1 {shlex.quote(args.repo)} fmjax"
    else:
        tarball = os.path.join(tempfile.gettempdir(), f"fmjax-{args.name}.tar.gz")
        run(["tar", "-czf", tarball, *(f"--exclude={p}" for p in EXCLUDE), "-C", args.repo, "."],
            args.dry_run)
        run(gcloud(args, "scp", [tarball, f"{args.name}:fmjax.tar.gz"], "--worker=all"),
            args.dry_run)
        fetch = "rm -rf fmjax && mkdir fmjax && tar -xzf fmjax.tar.gz -C fmjax"
    run(ssh(args, "all", f"{fetch} && cd fmjax && {INSTALL}"), args.dry_run)


def start(args) -> None:
    """Start the fmjax command on all workers in the background; each writes its own log."""
    fmjax = shlex.join([VENV_PYTHON, "-m", "fmjax", *args.fmjax_args])
    job = f"cd fmjax && FMJAX_DISTRIBUTED=auto {fmjax}; echo {DONE} $?"
    run(ssh(args, "all", f"nohup sh -c {shlex.quote(job)} > {LOG} 2>&1 < /dev/null & "
                         f"echo $! > {PID}"), args.dry_run)


def logs(args) -> None:
    """Follow one worker's log until its run ends; fails unless the run exited with status 0."""
    follow = f"tail --pid=$(cat {PID}) -n +1 -F {LOG}; grep -qx \"{DONE} 0\" {LOG}"
    run(ssh(args, str(args.worker), follow), args.dry_run)


def delete(args) -> None:
    run(gcloud(args, "delete", [args.name], "--quiet"), args.dry_run)


def create_run_delete(args) -> None:
    """create, setup, run, logs, then delete whatever happened (unless --keep): a paid VM."""
    try:
        create(args)
        setup(args)
        start(args)
        logs(args)
    finally:
        if args.keep:
            print(f"tpu_vm: kept {args.name}; delete it with: python tools/tpu_vm.py delete "
                  f"--name {args.name} --zone {args.zone}", file=sys.stderr)
        else:
            delete(args)


COMMANDS = {"create": create, "setup": setup, "run": start, "logs": logs, "delete": delete,
            "all": create_run_delete}


def is_url(repo: str) -> bool:
    return "://" in repo or repo.startswith("git@")


def workdir_of(fmjax_args: list[str]) -> str | None:
    for flag, value in zip(fmjax_args, fmjax_args[1:] + [None]):
        if flag == "--workdir":
            return value
        if flag.startswith("--workdir="):
            return flag.split("=", 1)[1]
    return None


def make_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--name", required=True, help="the TPU VM's name")
    common.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), europe-west4-b")
    common.add_argument("--project", help="default: gcloud's configured project")
    common.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    vm = Parser(add_help=False)
    vm.add_argument("--accelerator_type", default="v4-8",
                    help="v4-8, v4-32, v5litepod-8, v6e-8, ... (default: v4-8)")
    vm.add_argument("--version", help="TPU software version (default: the one for JAX on "
                                      "--accelerator_type, e.g. tpu-ubuntu2204-base for v4)")
    vm.add_argument("--spot", action="store_true", help="a Spot VM: cheaper, can be preempted")
    code = Parser(add_help=False)
    code.add_argument("--repo", default=str(REPO_ROOT),
                      help="a local checkout to copy (default: this one) or a git URL to clone")
    code.add_argument("--bucket", metavar="NAME",
                      help="mount this Cloud Storage bucket on every worker at /gcs/NAME "
                           "(gcsfuse); then give --workdir /gcs/NAME/...")
    job = Parser(add_help=False)
    job.add_argument("--workdir", help="passed to fmjax as --workdir, unless the fmjax "
                                       "arguments have one; a path, on a pod slice one every "
                                       "worker mounts: /gcs/BUCKET/... (see --bucket)")
    job.add_argument("--shared_workdir_ok", action="store_true",
                     help="the workdir is on a shared file system you mounted on every worker "
                          "(e.g. NFS): do not warn that it is not under /gcs/")

    parser = Parser(prog="tpu_vm.py", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("create", parents=[common, vm], help="create the TPU VM")
    sub.add_parser("setup", parents=[common, code],
                   help="mount --bucket, copy or clone the repo, install it into a Python "
                        f"{PYTHON_VERSION} venv")
    sub.add_parser("run", parents=[common, job], description=f"run ... -- FMJAX_ARGS. {RESUME}",
                   help="run -- FMJAX_ARGS on all workers (re-run to resume after preemption)")
    logs_parser = sub.add_parser("logs", parents=[common],
                                 help="follow a worker's log until the run ends")
    logs_parser.add_argument("--worker", type=int, default=0)
    sub.add_parser("delete", parents=[common], help="delete the TPU VM")
    all_parser = sub.add_parser("all", parents=[common, vm, code, job],
                                description=f"all ... -- FMJAX_ARGS. {RESUME}",
                                help="create, setup, run -- FMJAX_ARGS, logs (worker 0), delete")
    all_parser.add_argument("--keep", action="store_true", help="do not delete the VM at the end")
    all_parser.set_defaults(worker=0)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check everything before any command runs; bad input exits with status 2."""
    split = argv.index("--") if "--" in argv else len(argv)
    parser = make_parser()
    args = parser.parse_args(argv[:split])
    args.fmjax_args = fmjax_args = argv[split + 1:]
    if "repo" in args and not is_url(args.repo) and not (
            pathlib.Path(args.repo) / "pyproject.toml").is_file():
        parser.error(f"--repo {args.repo} is neither a git URL nor a checkout with pyproject.toml")
    if getattr(args, "bucket", None) and not BUCKET_NAME.fullmatch(args.bucket):
        parser.error(f"--bucket {args.bucket} is not a bucket name (lowercase letters, digits, "
                     "-, _ and ., e.g. my-bucket)")
    if args.command not in ("run", "all"):
        if fmjax_args:
            parser.error(f"{args.command} takes no fmjax arguments (only run and all do)")
        return args
    if not fmjax_args:
        parser.error(f"{args.command} needs the fmjax command after --, e.g. "
                     "-- train --config experiments/mnist1d/cnn.py --workdir /gcs/BUCKET/run")
    workdir = workdir_of(fmjax_args)
    if workdir and args.workdir and workdir != args.workdir:
        parser.error(f"two workdirs: --workdir {args.workdir} and {workdir} in the fmjax arguments")
    if not workdir and not args.workdir:
        parser.error("no workdir: give --workdir (or --workdir in the fmjax arguments)")
    if not workdir:
        workdir = args.workdir
        args.fmjax_args += ["--workdir", workdir]
    check_workdir(parser, args, workdir)
    return args


def check_workdir(parser: Parser, args: argparse.Namespace, workdir: str) -> None:
    """A URL other than gs:// or (for `all`, on a fresh VM) an unmounted /gcs/ path is an error;
    a path on each worker's own disk is a warning. A gs:// workdir every worker reaches."""
    if workdir.startswith("gs://"):
        return
    if "://" in workdir:
        parser.error(f"workdir {workdir} is a URL other than gs://; give gs://BUCKET/..., or "
                     f"mount the bucket on every worker with --bucket NAME (setup, all) and give "
                     f"--workdir {MOUNT_ROOT}/NAME/...")
    under_mount = workdir.startswith(MOUNT_ROOT + "/")
    if args.command == "all" and under_mount and not (
            args.bucket and (workdir + "/").startswith(mount_point(args.bucket) + "/")):
        mounted = f"only {mount_point(args.bucket)}" if args.bucket else "nothing"
        parser.error(f"workdir {workdir}: `all` mounts {mounted} on the new VM; give --bucket "
                     f"with the bucket the workdir is on")
    if not under_mount and not args.shared_workdir_ok:
        print(f"tpu_vm: warning: workdir {workdir} is not on a bucket mounted with gcsfuse "
              f"(--bucket NAME, --workdir {MOUNT_ROOT}/NAME/...): on each worker's own disk, a pod "
              "slice's workers do not share it and deleting the VM deletes it (on a file system "
              "every worker mounts, pass --shared_workdir_ok)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        COMMANDS[args.command](args)
    except subprocess.CalledProcessError as error:
        print(f"tpu_vm: error: status {error.returncode} from {shlex.join(error.cmd)}",
              file=sys.stderr)
        return 1
    except FileNotFoundError as error:
        print(f"tpu_vm: error: {error.filename} not found on PATH", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tpu_vm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
