"""Stopping on a signal without losing work. SIGTERM is what TPU VMs (spot/preemptible),
Kubernetes and SLURM send before they kill a job; SIGINT is Ctrl-C. fmjax treats both alike.

Inside the train loop (`PreemptionWatch`) a signal is only recorded; the loop reads it between
device calls, finishes the call, saves a checkpoint and stops with `Preempted` (exit status
128 + the signal). A repeated SIGTERM changes nothing (`timeout` signals a process and then its
group, schedulers repeat theirs): it must never cut the save short. A second SIGINT is a person
insisting: the CLI exits at once without saving; the checkpoints already written stay valid
(Orbax writes to a temporary directory and renames).

Several processes: JAX's preemption service (started by `jax.distributed.initialize`, which
replaces any SIGTERM handler with its own) catches SIGTERM on any host and agrees on a device call
at which every host stops, so all hosts save the same step. A SIGINT is passed into that service
as a SIGTERM to the process itself. The agreed call is the largest count of
`reached_preemption_sync_point` calls any host has made, plus one, and only an exact match fires
(xla/tsl/distributed_runtime/preemption/preemption_sync_manager.cc); so the value passed is the
number of device calls made (`_device_calls`), +1 per call on every host, not the optimizer step,
which moves by a call's length (up to `train.steps_per_call`).

Outside the loop (startup, compiling, `fmjax eval`, `sample`) there is nothing to save: SIGINT
raises KeyboardInterrupt and SIGTERM `Interrupted` (`take_over_signals`), which the CLI turns
into one line and exit status 128 + the signal.
"""

import itertools
import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

from fmjax.errors import Interrupted, stopped_by

# One count per process, like the preemption service's own state: every host makes the same
# sequence of device calls, so the same count names the same call everywhere.
_device_calls = itertools.count(1)

_exit_on_second_interrupt = False   # set by `take_over_signals`
ABORTED = ("fmjax: interrupted again (SIGINT): stopped at once, without saving; the checkpoints "
           "saved before are intact: run the same command again to resume from the newest")


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _not_ignored(signums: list[int]) -> list[int]:
    """Those of `signums` the process was not started to ignore (`nohup`, a shell's background
    job ignores SIGINT): an ignored signal stays ignored."""
    return [s for s in signums if signal.getsignal(s) is not signal.SIG_IGN]


def take_over_signals() -> None:
    """For the CLI, which owns its process: SIGTERM raises `Interrupted` from now on (not the
    default silent kill), as SIGINT raises KeyboardInterrupt, and a second Ctrl-C in the train
    loop ends the process at once (elsewhere, e.g. in a notebook, whose kernel must survive, it
    raises KeyboardInterrupt). Call before `jax.distributed.initialize`, which then takes
    SIGTERM over."""
    global _exit_on_second_interrupt
    _exit_on_second_interrupt = True
    for signum in _not_ignored([signal.SIGTERM]):
        signal.signal(signum, _raise_interrupted)


class PreemptionWatch:
    """Use as a context manager around the train loop; ask `requested()` once per device call,
    on every process."""

    def __init__(self):
        self.signum = None   # the first stop signal this process received
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            own = [signal.SIGINT]
            if not jax.distributed.is_initialized():   # else SIGTERM is JAX's
                own.append(signal.SIGTERM)
            self._previous = {s: signal.signal(s, self._on_signal) for s in _not_ignored(own)}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            if handler is not None:   # None: installed outside Python, cannot be put back
                signal.signal(signum, handler)

    def _on_signal(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            if jax.distributed.is_initialized():   # JAX's service stops every host at one call
                os.kill(os.getpid(), signal.SIGTERM)
        elif signum == signal.SIGINT and _exit_on_second_interrupt:
            print(ABORTED, file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGINT)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    def requested(self) -> bool:
        """Stop after this device call? The same answer on every process."""
        if jax.distributed.is_initialized():
            return multihost_utils.reached_preemption_sync_point(next(_device_calls))
        return self.signum is not None

    @property
    def stopped_by(self) -> str:
        """'preempted (SIGTERM)' or 'interrupted (SIGINT)'; a host stopped by another host's
        signal says SIGTERM."""
        return stopped_by(self.signum or signal.SIGTERM)

    @property
    def exit_status(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)
