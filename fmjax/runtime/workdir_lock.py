"""One `fmjax train` per workdir: a second run on a busy workdir stops at once, naming the first.

Two runs on one workdir would interleave `metrics.jsonl` and write the same checkpoint steps. The
lock is `fcntl.flock` on `WORKDIR/fmjax.lock`: the kernel drops it when its holder ends in any way
(exit, crash, SIGKILL), so a killed run never leaves a stale lock behind. The file's content
(host, pid, start time) only names the holder for the message. In a multi-process run process 0
holds the lock for all, and every process learns whether it got it.

Not detected: runs on different machines sharing a workdir over a filesystem whose locks are local
to each machine (gcsfuse; NFS without a lock manager), and a second run on a gs:// workdir (Cloud
Storage has no lock that its holder's death releases: there is none, and a line says so).
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from fmjax.errors import UserError, WorkdirError
from fmjax.runtime import workdir_files

LOCK_FILE = "fmjax.lock"
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _holder(path: pathlib.Path) -> str:
    """'host H, pid P, since T' from the lock file (written by the holder right after locking)."""
    try:
        owner = json.loads(path.read_text())
        return f"host {owner['host']}, pid {owner['pid']}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):   # the holder has not written it yet
        return "its host and pid not yet written"


def _unlocked(workdir) -> None:
    print(f"fmjax: the filesystem of {workdir} has no file locks: a second run on this workdir "
          "would not be detected", file=sys.stderr)


def _acquire(workdir: pathlib.Path) -> int | None:
    """The locked file descriptor (creating the workdir); UserError when another holds it.
    None for a gs:// workdir, which has no lock."""
    if workdir_files.is_url(workdir):
        _unlocked(workdir)
        return None
    path = workdir / LOCK_FILE
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise WorkdirError(f"cannot write to the workdir {workdir}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            _unlocked(workdir)
            return fd
        os.close(fd)
        raise UserError(f"the workdir {workdir} is in use by another fmjax train "
                        f"({_holder(path)}); wait for it to end, or use another --workdir") from e
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since})
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode() + b"\n", 0)
    except OSError as e:
        os.close(fd)
        raise WorkdirError(f"cannot write to the workdir {workdir}: {e.strerror or e}") from e
    return fd


@contextlib.contextmanager
def hold(workdir):
    """Hold `workdir`'s lock (creating the workdir) for the block; UserError if a live process
    holds it, WorkdirError if the workdir cannot be written."""
    fd, error = None, None
    if jax.process_index() == 0:
        try:
            fd = _acquire(workdir_files.as_path(workdir))
        except UserError as e:
            error = e
    if jax.process_count() > 1:
        locked = bool(multihost_utils.broadcast_one_to_all(np.array(error is None)))
        if not locked and error is None:
            error = UserError(f"process 0 could not lock the workdir {workdir} (see its error)")
    if error is not None:
        raise error
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)   # releases the lock
