"""Has the job been asked to stop? SIGTERM is what TPU VMs (spot/preemptible), Kubernetes and
SLURM send before they kill a job.

One process: a SIGTERM handler sets a flag, which the train loop reads between device calls; it
then finishes the call, saves a checkpoint and stops. Several processes: JAX's preemption
service (started by `jax.distributed.initialize`) catches the signal on any host and agrees on a
step at which every host stops (`multihost_utils.reached_preemption_sync_point`), so all hosts
save the same step; a Python handler would replace JAX's, so none is installed there.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
    """Use as a context manager around the train loop; ask `requested(step)` once per device
    call, on every process, with the same step numbers."""

    def __init__(self):
        self.signalled = False
        self._previous = None

    def __enter__(self):
        in_main_thread = threading.current_thread() is threading.main_thread()
        if not jax.distributed.is_initialized() and in_main_thread:
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_signal(self, signum, frame):
        self.signalled = True

    def requested(self, step: int) -> bool:
        if jax.distributed.is_initialized():
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled
