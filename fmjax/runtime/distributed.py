"""Joining a multi-process (multi-host) run: `initialize_from_env()`, called by every command.

Three ways a process finds out whether, and with whom, it runs:

1. Explicit: `FMJAX_COORDINATOR=host:port`, `FMJAX_NUM_PROCESSES=N` and `FMJAX_PROCESS_ID=i` are
   all set (what `fmjax launch_local` sets for its children; on a GPU cluster without a
   scheduler, set them on each node by hand). Cluster auto-detection is switched off, so a stray
   SLURM variable cannot override them.
2. Auto-detected: `FMJAX_DISTRIBUTED=auto` calls `jax.distributed.initialize()` with no
   arguments, and JAX reads the cluster: Cloud TPU VM pods, SLURM, Open MPI, Kubernetes (GKE)
   jobs. (An environment variable, not a flag: it is read before the flags and the config.)
3. Neither: a single process; nothing is initialised.

Ways 1 and 2 must run before anything touches a JAX backend (`jax.devices()`, any computation).

A process of a multi-process run that fails exits at once (`failures_exit_at_once`): a normal
exit would wait at JAX's shutdown barrier (minutes) for peers that are themselves stuck in a
collective waiting for it, so neither `launch_local` nor a cluster scheduler would see it fail.
"""

import contextlib
import os
import sys
import traceback
from typing import NoReturn

import jax

from fmjax.errors import UserError, first_line

ENV_VARS = ("FMJAX_COORDINATOR", "FMJAX_NUM_PROCESSES", "FMJAX_PROCESS_ID")


def explicit_settings() -> tuple[str, int, int] | None:
    """(coordinator, num_processes, process_id) from the FMJAX_* variables; None if none is set."""
    values = [os.environ.get(name) for name in ENV_VARS]
    if not any(values):
        return None
    if not all(values):
        missing = ", ".join(n for n, v in zip(ENV_VARS, values) if not v)
        raise UserError(f"{missing} not set: a multi-process run needs all of "
                        f"{', '.join(ENV_VARS)}")
    coordinator, num_processes, process_id = values
    try:
        num_processes, process_id = int(num_processes), int(process_id)
    except ValueError:
        raise UserError(f"FMJAX_NUM_PROCESSES={values[1]} and FMJAX_PROCESS_ID={values[2]} must "
                        "be integers") from None
    if not 0 <= process_id < num_processes:
        raise UserError(f"FMJAX_PROCESS_ID={process_id} is not in [0, {num_processes})")
    return coordinator, num_processes, process_id


def initialize_from_env() -> None:
    """Initialise `jax.distributed` as the environment asks (see the module docstring)."""
    settings = explicit_settings()
    if settings is not None:
        coordinator, num_processes, process_id = settings
        # Cross-process collectives for the CPU backend (only it reads this; gloo is jax 0.10's
        # default, named here because without it a CPU mesh cannot span processes).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   cluster_detection_method="deactivate")
        return
    mode = os.environ.get("FMJAX_DISTRIBUTED", "")
    if mode == "auto":
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:   # no cluster found, coordinator unreachable
            raise UserError(f"FMJAX_DISTRIBUTED=auto: {first_line(e)}") from e
    elif mode:
        raise UserError(f"FMJAX_DISTRIBUTED={mode}: the only value is 'auto'")


@contextlib.contextmanager
def failures_exit_at_once():
    """In a multi-process run, turn any failure (an exception, a non-zero `sys.exit`) into an
    immediate `os._exit` with its status, skipping the shutdown barrier; otherwise a no-op."""
    try:
        yield
    except SystemExit as e:
        if e.code in (None, 0) or not jax.distributed.is_initialized():
            raise
        if not isinstance(e.code, int):   # sys.exit("message")
            print(e.code, file=sys.stderr)
        _exit_now(e.code if isinstance(e.code, int) else 1)
    except BaseException:
        if not jax.distributed.is_initialized():
            raise
        traceback.print_exc()
        _exit_now(1)


def _exit_now(status: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
