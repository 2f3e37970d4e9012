"""One trial as an ordinary `fmjax train` process in its own workdir, followed while it runs.

The process's output goes to `WORKDIR/train.log`. Its `metrics.jsonl` is read as it grows: each
new eval of the objective is reported to Optuna (`trial.report`), and when the pruner says so the
process gets SIGTERM (it saves a checkpoint and ends). The objective is the best value of the
metric over the trial's evals, and the trial's other `val/*` and `eval/*` metrics are taken at
that eval's step: the checkpoint that `checkpoint.best_metric` keeps.
"""

import dataclasses
import fcntl
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

from fmjax.metrics.writers import read_jsonl
from fmjax.sweep import devices, results
from fmjax.sweep import spec as spec_lib

POLL_S = 0.5
LOCK_WAIT_S = 600     # a killed sweep's trial may still be saving its checkpoint


# How a process the sweep stopped may end: 0, 130 or 143 from fmjax train, or killed by the signal
# itself when it came as the process was exiting (Python's finalisation restores the default
# handlers): a trial that had finished is then resumed, and completes at once.
STOPPED_CODES = (0, 128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)


@dataclasses.dataclass
class Outcome:
    """How a trial process ended: 'complete', 'pruned', 'failed' or 'stopped' (by the sweep)."""
    state: str
    objective: float | None = None
    best_step: int | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    error: str = ""


def config_arg(key: str, value) -> str:
    """`--config.KEY=VALUE` as ml-collections parses it back to `value`."""
    text = repr(value) if isinstance(value, (float, tuple, list)) else str(value)
    return f"--config.{key}={text}"


def command(experiment: str, overrides: list[str], params: dict, spec: spec_lib.SweepSpec,
            workdir: pathlib.Path) -> list[str]:
    """The trial's `python -m fmjax train` arguments: the sweep command's overrides, then the
    sweep's constants and the trial's parameters, then the objective as the best-checkpoint
    metric."""
    settings = {**spec.constants, **params, "checkpoint.best_metric": spec.metric,
                "checkpoint.best_mode": spec.mode}
    return ["-m", "fmjax", "train", "--config", experiment, "--workdir", str(workdir),
            "--noprogress", *overrides, *(config_arg(k, v) for k, v in settings.items())]


def records(workdir: pathlib.Path) -> list[dict]:
    """The trial's metrics.jsonl so far (a line still being written left out)."""
    path = workdir / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


def wait_for_workdir(workdir: pathlib.Path, say) -> None:
    """Wait while a process of an earlier sweep (killed, its trial now saving a checkpoint)
    still holds the workdir's lock."""
    path = workdir / "fmjax.lock"
    if not path.exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        deadline, said = time.monotonic() + LOCK_WAIT_S, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return   # the trial's own `fmjax train` then names the holder
                if not said:
                    say(f"waiting for the earlier process of {workdir} to exit")
                    said = True
                time.sleep(POLL_S)
    finally:
        os.close(fd)   # releases the lock for the trial process


def last_line(log: pathlib.Path) -> str:
    """The last error line of a trial's log (its last non-empty line otherwise)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("fmjax: error:")]
    return (errors or lines or ["(no output)"])[-1]


def run(trial, experiment: str, overrides: list[str], params: dict, spec: spec_lib.SweepSpec,
        workdir: pathlib.Path, worker: devices.Worker, stop: threading.Event, say) -> Outcome:
    """Run (or resume) the trial's process until it ends, is pruned, or `stop` is set."""
    workdir.mkdir(parents=True, exist_ok=True)
    wait_for_workdir(workdir, say)
    reported = set(trial.storage.get_trial(trial._trial_id).intermediate_values)
    proc = start(command(experiment, overrides, params, spec, workdir), workdir / "train.log",
                 worker)
    pruned = False
    while proc.poll() is None and not stop.wait(POLL_S):
        if _report(trial, workdir, spec, reported) and trial.should_prune():
            pruned = True
            break
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)   # it saves a checkpoint and ends
    returncode = proc.wait()
    _report(trial, workdir, spec, reported)
    return outcome(workdir, spec, returncode, pruned, stop.is_set())


def start(argv: list[str], log_path: pathlib.Path, worker: devices.Worker) -> subprocess.Popen:
    """`python ARGV` on `worker`'s devices, its output appended to `log_path`, through
    fmjax/sweep/child.py (it cannot outlive the sweep)."""
    child = [sys.executable, "-m", "fmjax.sweep.child", str(os.getpid()),
             ",".join(map(str, worker.cpus)), "--", *argv]
    with open(log_path, "ab") as log:
        return subprocess.Popen(child, stdout=log, stderr=subprocess.STDOUT,
                                env={**devices.trial_environ(), **worker.env})


def outcome(workdir: pathlib.Path, spec: spec_lib.SweepSpec, returncode: int, pruned: bool,
            stopping: bool, log: pathlib.Path | None = None) -> Outcome:
    """A process that ended by itself is complete (or failed); one the sweep stopped stays
    resumable; one the pruner stopped is pruned. `log`: its output (default WORKDIR/train.log)."""
    found = results.best_eval(records(workdir), spec.metric, spec.goal)
    result = Outcome("failed")
    if found:
        metrics = {k: v for k, v in found.items() if k.startswith(results.METRIC_PREFIXES)}
        result = Outcome("failed", found[spec.metric], found["step"], metrics)
    if returncode == 0 and found:
        result.state = "complete"
    elif stopping and returncode in STOPPED_CODES:
        result.state = "stopped"
    elif pruned:
        result.state = "pruned"
    else:
        result.error = (last_line(log or workdir / "train.log") if returncode else
                        f"no finite {spec.metric} in its evals")
    return result


def _report(trial, workdir: pathlib.Path, spec: spec_lib.SweepSpec, reported: set) -> bool:
    """Report the evals not yet reported; whether there was one."""
    new = {r["step"]: r[spec.metric] for r in records(workdir)
           if spec.metric in r and r["step"] not in reported}
    for step, value in new.items():
        trial.report(value, step)
        reported.add(step)
    return bool(new)
