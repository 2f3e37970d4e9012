"""`fmjax launch_local`: a real multi-process (multi-host) run on one machine.

    fmjax launch_local --num_processes=2 --devices_per_process=4 -- \
        train --config experiments/mnist1d/mlp.py --workdir runs/mlp_2x4

Starts N `python -m fmjax <command>` processes on CPU, each with D forced host devices and the
FMJAX_* variables that make `fmjax.runtime.distributed` join them into one JAX run (coordinator
on a free localhost port, gloo collectives). Process 0's stdout and stderr pass through
unchanged (its progress bar, its final JSON line); the others' output goes to stderr, each line
prefixed "[process i] ". The launcher waits for all; when one fails it stops the others at once
(a process whose peer died would otherwise wait in a collective; SIGKILL, as JAX catches SIGTERM
to notice preemption, and Orbax's atomic writes leave no half checkpoint) and exits with that
process's status.

Stopping: the processes run in their own sessions, so a terminal's Ctrl-C and `timeout` (which
signals its child and then the child's whole group) reach the launcher alone. The launcher's
handler only records the signal; it then sends each process exactly one SIGTERM, so they save the
same step and stop, as on a real cluster, and exits with 128 + its signal (143; 130 for Ctrl-C).
More signals change nothing: every process gets the whole 30 s, then any left are killed.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

USAGE = ("usage: fmjax launch_local --num_processes=N [--devices_per_process=D] -- "
         "{train|eval|inspect|sample|translate} [flags]")
SUMMARY = "Run an fmjax command as several cooperating processes on this machine (multi-host)."
HELP = f"""{USAGE}

{SUMMARY}
Each process gets D forced CPU devices and joins one JAX run (a localhost coordinator, gloo
collectives). Process 0's output passes through; the others' goes to stderr, prefixed
"[process i] ". A stop signal gives every process one SIGTERM and 30 s to save.

flags:
  --num_processes N         How many processes (required).
  --devices_per_process D   Forced CPU devices per process (default: 1)."""
READER_SECONDS = 5.0   # to pass on the last output of the stopped processes
PREEMPTION_GRACE_SECONDS = 30.0   # what a TPU VM allows between SIGTERM and the kill
# A terminal's Ctrl-C, a scheduler or `timeout`, a closed terminal: each stops the whole run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOPPED_STATUSES = (128 + signal.SIGINT, 128 + signal.SIGTERM)   # fmjax saved, then stopped


class LaunchError(ValueError):
    """Bad launcher arguments (one line, exit 2)."""


def parse_args(argv: list[str], commands: tuple[str, ...]) -> tuple[int, int, list[str]]:
    """`--num_processes=N --devices_per_process=D -- COMMAND ...` -> (N, D, COMMAND ...)."""
    if "--" not in argv:
        raise LaunchError(f"launch_local needs `--` before the fmjax command; {USAGE}")
    split = argv.index("--")
    own, command = argv[:split], argv[split + 1:]
    values = {"num_processes": None, "devices_per_process": "1"}
    i = 0
    while i < len(own):
        name, has_value, value = own[i].removeprefix("--").partition("=")
        if not own[i].startswith("--") or name not in values:
            raise LaunchError(f"launch_local: unknown argument {own[i]}; {USAGE}")
        if not has_value:
            if i + 1 == len(own):
                raise LaunchError(f"launch_local: --{name} needs a value")
            i, value = i + 1, own[i + 1]
        values[name] = value
        i += 1
    if values["num_processes"] is None:
        raise LaunchError(f"launch_local: --num_processes is required; {USAGE}")
    sizes = {}
    for name, value in values.items():
        if not value.isdigit() or int(value) < 1:
            raise LaunchError(f"launch_local: --{name} must be a positive integer, got {value}")
        sizes[name] = int(value)
    if not command or command[0] not in commands:
        got = command[0] if command else "nothing"
        raise LaunchError(f"launch_local: after `--` comes an fmjax command "
                          f"({'|'.join(commands)}), got {got}")
    return sizes["num_processes"], sizes["devices_per_process"], command


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(port: int, num_processes: int, process_id: int, devices: int) -> dict[str, str]:
    """The environment of process `process_id`: the parent's, plus what makes it join the run."""
    env = dict(os.environ)
    env.pop("FMJAX_DISTRIBUTED", None)
    other_xla_flags = [f for f in env.get("XLA_FLAGS", "").split()
                       if not f.startswith("--xla_force_host_platform_device_count")]
    env.update(
        FMJAX_COORDINATOR=f"127.0.0.1:{port}", FMJAX_NUM_PROCESSES=str(num_processes),
        FMJAX_PROCESS_ID=str(process_id), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
        XLA_FLAGS=" ".join(other_xla_flags +
                           [f"--xla_force_host_platform_device_count={devices}"]))
    return env


def _prefix_lines(stream, process_id: int) -> None:
    for line in stream:
        sys.stderr.write(f"[process {process_id}] {line}")
        sys.stderr.flush()


def _stop(procs: list[subprocess.Popen]) -> None:
    """Kill every process still running."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def _supervise(procs: list[subprocess.Popen], received: list[int]) -> int:
    """Wait for the processes; the run's exit status. A stop signal (`received`, filled by the
    launcher's handler) is passed on as one SIGTERM to each; a process that stops on its own
    signal (exits 130 or 143, after saving) leaves the others to stop at the same step through
    JAX. Either way each gets the whole grace period, however many signals follow. A process
    that fails, or is killed, stops the others at once: they would wait for it in a collective."""
    status, deadline, forwarded = 0, None, False
    running = list(range(len(procs)))
    while running:
        if received and not forwarded:
            forwarded = True
            for i in running:
                procs[i].send_signal(signal.SIGTERM)
            status = status or 128 + received[0]
            deadline = deadline or time.monotonic() + PREEMPTION_GRACE_SECONDS
        for i in list(running):
            code = procs[i].poll()
            if code is None:
                continue
            running.remove(i)
            if code:
                status = status or (code if code > 0 else 128 - code)   # killed: 128 + signal
            if not code or (deadline is not None and code > 0):
                continue   # done, or stopped as asked
            if code in STOPPED_STATUSES:
                deadline = time.monotonic() + PREEMPTION_GRACE_SECONDS
                continue
            if running and deadline is None:   # (if stopping: killed before it could save)
                how = f"exited with status {code}" if code > 0 else \
                    f"was killed by signal {-code}"
                print(f"fmjax: error: launch_local: process {i} {how}; stopping the others",
                      file=sys.stderr)
            return status   # the others would wait for it in a collective
        if deadline is not None and time.monotonic() > deadline and running:
            print(f"fmjax: error: launch_local: process {', '.join(map(str, running))} still "
                  f"running {PREEMPTION_GRACE_SECONDS:.0f} s after SIGTERM; killed",
                  file=sys.stderr)
            return status
        time.sleep(0.05)
    return status


def launch_local(num_processes: int, devices_per_process: int, command: list[str],
                 program: tuple[str, ...] = (sys.executable, "-m", "fmjax")) -> int:
    """Run `program COMMAND` (`fmjax COMMAND`) as `num_processes` cooperating processes; the
    first non-zero exit status (0 if all succeed), or 128 + the signal that stopped the run."""
    port = free_port()
    procs, readers = [], []
    received = []   # stop signals to the launcher, in order of arrival
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                    for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        for i in range(num_processes):
            piped = subprocess.PIPE if i else None
            procs.append(subprocess.Popen(
                [*program, *command], env=child_env(port, num_processes, i, devices_per_process),
                stdin=subprocess.DEVNULL, stdout=piped, stderr=subprocess.STDOUT if i else None,
                text=True, start_new_session=True))
            if i:
                readers.append(threading.Thread(target=_prefix_lines, args=(procs[i].stdout, i),
                                                 daemon=True))
                readers[-1].start()
        status = _supervise(procs, received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop(procs)
        for reader in readers:
            reader.join(timeout=READER_SECONDS)
    return status


def main(argv: list[str], commands: tuple[str, ...]) -> int:
    """`fmjax launch_local ARGV`: the exit status of the run (2 for bad arguments)."""
    try:
        num_processes, devices, command = parse_args(argv, commands)
    except LaunchError as e:
        print(f"fmjax: error: {e}", file=sys.stderr)
        return 2
    return launch_local(num_processes, devices, command)
