"""The sweep's workers: each takes a trial, runs it as a process, tells Optuna, and repeats until
the budget is spent.

A trial is taken under the study's `BudgetLock`, first among the trials an earlier sweep on this
host left RUNNING (its process died: the trial is resumed from its own checkpoint under the same
number), then as a new trial while the study has fewer trials than the budget. Who runs a trial is
a `flock` held on `TRIALDIR/owner.lock` by the sweep process that runs it; the kernel drops it when
that process dies in any way, so a trial whose lock can be taken has no live owner, and taking it
is atomic. Trials are resumed only by the host whose sweep directory holds their checkpoints.
"""

import dataclasses
import fcntl
import os
import pathlib
import socket
import threading

import optuna
from optuna.trial import TrialState

from fmjax.sweep import member_group, trial_process
from fmjax.sweep import spec as spec_lib
from fmjax.sweep.devices import Worker
from fmjax.sweep.storage import BudgetLock

OWNER_LOCK = "owner.lock"
STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
          "failed": TrialState.FAIL}


def trial_dir(sweep_dir: pathlib.Path, number: int) -> pathlib.Path:
    return sweep_dir / "trials" / f"{number:04d}"


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, without its `study.stop()` after the last point: outside `optimize` that
    raises, and the sweep's budget (the grid's size) already ends the sweep."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(spec: spec_lib.SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler for the trial asked for after `seed - spec.seed` others: seeding by trial
    count keeps a sweep's draws the same whatever the number of workers and hosts."""
    if spec.method == "grid":
        return _GridSampler({p.key: list(p.values) for p in spec.params}, seed=spec.seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: spec_lib.SweepSpec, eval_every: int,
                num_steps: int) -> optuna.pruners.BasePruner:
    """Optuna steps are train steps; `early_terminate.min_iter` counts evals."""
    terminate = spec.early_terminate
    if not terminate:
        return optuna.pruners.NopPruner()
    first = terminate["min_iter"] * eval_every
    if terminate["type"] == "median":
        return optuna.pruners.MedianPruner(n_warmup_steps=first)
    return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=num_steps,
                                          reduction_factor=terminate["eta"])


def suggest(trial: optuna.Trial, spec: spec_lib.SweepSpec) -> dict:
    """The trial's parameters (a resumed trial gets back the values it had)."""
    params = {}
    for p in spec.params:
        if p.values:
            params[p.key] = trial.suggest_categorical(p.key, list(p.values))
        elif p.distribution == "int_uniform":
            params[p.key] = trial.suggest_int(p.key, p.low, p.high)
        else:
            params[p.key] = trial.suggest_float(p.key, p.low, p.high,
                                                log=p.distribution == "log_uniform")
    return params


@dataclasses.dataclass
class Claim:
    trial: optuna.Trial
    params: dict
    owner_fd: int
    resumed: bool


def _try_own(workdir: pathlib.Path) -> int | None:
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


@dataclasses.dataclass
class Sweep:
    """Everything the workers share."""
    study: optuna.Study
    spec: spec_lib.SweepSpec
    sweep_dir: pathlib.Path
    experiment: str
    overrides: list[str]
    lock: BudgetLock
    after_trial: callable = lambda: None     # writes the results
    config: object = None    # the trials' common config (needed by `group_size` > 1 only)
    group_size: int = 1      # > 1: trials run as vectorised groups (fmjax/sweep/member_group.py)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    host: str = dataclasses.field(default_factory=socket.gethostname)
    printed: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    errors: list = dataclasses.field(default_factory=list)   # a worker's exception, re-raised

    def say(self, line: str) -> None:
        with self.printed:
            print(line, flush=True)

    def claim(self) -> Claim | None:
        """A trial to run, or None when the budget is spent (or taken by live workers)."""
        with self.lock():
            trials = self.study.get_trials(deepcopy=False)
            for t in trials:
                if t.state == TrialState.RUNNING and self._may_resume(t):
                    fd = _try_own(trial_dir(self.sweep_dir, t.number))
                    if fd is not None:
                        return self._claimed(optuna.Trial(self.study, t._trial_id), fd, True)
            if len(trials) >= self.spec.num_trials:
                return None
            self.study.sampler = make_sampler(self.spec, self.spec.seed + len(trials))
            trial = self.study.ask()
            return self._claimed(trial, _try_own(trial_dir(self.sweep_dir, trial.number)), False)

    def _may_resume(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether this process may run RUNNING `trial` if no live process owns it: one of this
        host's in this DIR, or one whose claim was cut short (no attrs: under the lock, attrs
        are always set before it is released, so no live claim lacks them)."""
        if "host" not in trial.user_attrs:
            return True
        return (trial.user_attrs["host"] == self.host and
                trial.user_attrs.get("workdir") == str(trial_dir(self.sweep_dir, trial.number)))

    def _claimed(self, trial: optuna.Trial, fd: int, resumed: bool) -> Claim:
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("workdir", str(trial_dir(self.sweep_dir, trial.number)))
        return Claim(trial, suggest(trial, self.spec), fd, resumed)

    def work(self, worker: Worker) -> None:
        """One worker: trials on `worker`'s devices until the budget is spent or `stop`."""
        try:
            self._work(worker)
        except BaseException as e:   # the storage failed: stop the others, raise it in `run`
            self.errors.append(e)
            self.stop.set()

    def _work(self, worker: Worker) -> None:
        while not self.stop.is_set():
            claims = []
            while len(claims) < self.group_size and (claim := self.claim()) is not None:
                claims.append(claim)
            if not claims:
                return
            try:
                if self.group_size > 1:
                    self._run_group(claims, worker)
                else:
                    self._run(claims[0], worker)
            finally:
                for claim in claims:
                    os.close(claim.owner_fd)

    def _run(self, claim: Claim, worker: Worker) -> None:
        number = claim.trial.number
        workdir = trial_dir(self.sweep_dir, number)
        self.say(f"trial {number}: {'resumed' if claim.resumed else 'started'} on "
                 f"{worker.label}: {spec_lib.shown(claim.params)}")
        outcome = trial_process.run(claim.trial, self.experiment, self.overrides, claim.params,
                                    self.spec, workdir, worker, self.stop, self.say)
        self._finish(claim, outcome)

    def _run_group(self, claims: list[Claim], worker: Worker) -> None:
        numbers = [c.trial.number for c in claims]
        self.say(f"trials {', '.join(map(str, numbers))}: started as one vectorised process on "
                 f"{worker.label}")
        dirs = [trial_dir(self.sweep_dir, n) for n in numbers]
        outcomes = member_group.run(self.config, self.spec, [c.params for c in claims], dirs,
                                    self.sweep_dir, worker, self.stop)
        for claim, outcome in zip(claims, outcomes):
            self._finish(claim, outcome, write_results=False)
        self.after_trial()

    def _finish(self, claim: Claim, outcome: trial_process.Outcome,
                write_results: bool = True) -> None:
        """Tell Optuna how the trial ended, say so, and write the results."""
        number = claim.trial.number
        if outcome.state == "stopped":   # stays RUNNING: the next sweep resumes it
            self.say(f"trial {number}: stopped" + ("" if self.group_size > 1 else
                                                   " with a checkpoint"))
            return
        for name, value in outcome.metrics.items():
            claim.trial.set_user_attr(name, value)
        if outcome.best_step is not None:
            claim.trial.set_user_attr("best_step", outcome.best_step)
        if outcome.error:
            claim.trial.set_user_attr("error", outcome.error)
        values = outcome.objective if outcome.state == "complete" else None
        self.study.tell(claim.trial, values, STATES[outcome.state])
        detail = (f"{self.spec.metric}={outcome.objective:.4g} at step {outcome.best_step}"
                  if outcome.objective is not None else "")
        self.say(f"trial {number}: {outcome.state}"
                 + (f", {detail}" if detail else "") + (f": {outcome.error}" if outcome.error
                                                         else ""))
        if write_results:
            self.after_trial()

    def run(self, workers: list[Worker]) -> None:
        """Run the workers until the budget is spent or `stop` is set (by a signal)."""
        threads = [threading.Thread(target=self.work, args=(w,), daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)   # wakes up for signal handlers in the main thread
        if self.errors:
            raise self.errors[0]
