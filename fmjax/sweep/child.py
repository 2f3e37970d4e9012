"""Starts one trial's `fmjax train` so that it cannot outlive the sweep that started it.

    python -m fmjax.sweep.child PARENT_PID CPUS -- -m fmjax train ...

sets PR_SET_PDEATHSIG (the kernel sends SIGTERM when the sweep dies, even by SIGKILL, and the trial
saves a checkpoint and ends), pins the process to CPUS ("0,1"; "" = unchanged), then execs Python
with the rest of the arguments. Doing this in the child, not in a `preexec_fn`, keeps `fork` safe
in the sweep's threads. PDEATHSIG and the affinity survive `exec`.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent, cpus, separator, *command = argv[1:]
    assert separator == "--", argv
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != int(parent):   # the sweep died before the line above: nothing to run
        sys.exit(128 + signal.SIGTERM)
    if cpus:
        os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])
    os.execv(sys.executable, [sys.executable, *command])


if __name__ == "__main__":
    main(sys.argv)
