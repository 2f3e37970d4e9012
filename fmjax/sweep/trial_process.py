"""One trial as an ordinary `fmjax train` process in its own workdir, followed while it runs.

The process's output goes to `WORKDIR/train.log`. Its `metrics.jsonl` is read as it grows: each
new eval of the objective is reported to Optuna (`trial.report`), and when the pruner says so the
process gets SIGTERM (it saves a checkpoint and ends). The objective is the best value of the
metric over the trial's evals, and the trial's other `val/*` and `eval/*` metrics are taken at
that eval's step: the checkpoint that `checkpoint.best_metric` keeps.
"""

import dataclasses
import fcntl
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

from fmjax.sweep import spec as spec_lib
from fmjax.sweep import devices

POLL_S = 0.5
LOCK_WAIT_S = 600     # a killed sweep's trial may still be saving its checkpoint


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


def evals(workdir: pathlib.Path, metric: str) -> dict[int, dict]:
    """{step: the eval metrics logged at that step} for the steps where `metric` was logged."""
    by_step: dict[int, dict] = {}
    path = workdir / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:   # a line still being written
            continue
        by_step.setdefault(record["step"], {}).update(
            {k: v for k, v in record.items() if k.startswith(("val/", "eval/"))})
    return {s: m for s, m in sorted(by_step.items()) if metric in m}


def best(evals_by_step: dict[int, dict], metric: str, mode: str) -> tuple[int, dict] | None:
    """(step, metrics) of the best eval (the first, on ties); None if there is none."""
    finite = [(s, m) for s, m in evals_by_step.items() if math.isfinite(m[metric])]
    if not finite:
        return None
    pick = max if mode == "max" else min
    return pick(finite, key=lambda item: item[1][metric])


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
    argv = command(experiment, overrides, params, spec, workdir)
    child = [sys.executable, "-m", "fmjax.sweep.child", str(os.getpid()),
             ",".join(map(str, worker.cpus)), "--", *argv]
    with open(workdir / "train.log", "ab") as log:
        proc = subprocess.Popen(child, stdout=log, stderr=subprocess.STDOUT,
                                env={**devices.trial_environ(), **worker.env})
    pruned = stopped = False
    while proc.poll() is None:
        if stop.wait(POLL_S):
            stopped = True
            break
        if _report(trial, workdir, spec, reported) and trial.should_prune():
            pruned = True
            break
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)   # it saves a checkpoint and ends
    returncode = proc.wait()
    _report(trial, workdir, spec, reported)
    found = best(evals(workdir, spec.metric), spec.metric, spec.mode)
    outcome = Outcome("failed")
    if found:
        outcome = Outcome("failed", found[1][spec.metric], found[0], found[1])
    if stopped or (stop.is_set() and returncode in (130, 143)):
        outcome.state = "stopped"
    elif pruned:
        outcome.state = "pruned"
    elif returncode == 0 and found:
        outcome.state = "complete"
    else:
        outcome.error = (last_line(workdir / "train.log") if returncode else
                         f"no finite {spec.metric} in its evals")
    return outcome


def _report(trial, workdir: pathlib.Path, spec: spec_lib.SweepSpec, reported: set) -> bool:
    """Report the evals not yet reported; whether there was one."""
    new = {s: m[spec.metric] for s, m in evals(workdir, spec.metric).items() if s not in reported}
    for step, value in new.items():
        trial.report(value, step)
        reported.add(step)
    return bool(new)
