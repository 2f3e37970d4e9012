"""`fmjax sweep`: check the sweep, open (or re-open) its study, run the workers, report.

Everything that can be wrong with the input (the sweep file, the experiment, the workers, the
storage URL) is found before DIR is created. A re-run of the same command on DIR continues the
sweep; a different experiment, overrides, sweep or storage on the same DIR is refused.
"""

import json
import os
import pathlib
import signal
import sys
import threading

import ml_collections
import optuna

from fmjax.errors import UserError, stopped_by
from fmjax.runtime import workdir_files
from fmjax.sweep import devices, member_group, results, runner, signals, storage
from fmjax.sweep import spec as spec_lib

SWEEP_FILE = "sweep.json"


def _check_same(recorded: dict, record: dict, where: str) -> None:
    for key in ("experiment", "overrides", "sweep", "storage", "vectorize"):
        if recorded.get(key) != record[key]:
            raise UserError(f"{where} holds a sweep with a different {key} "
                            f"({json.dumps(recorded.get(key))[:80]}); run its own command again, "
                            "or use another --workdir")


def _check_directory(sweep_dir: pathlib.Path) -> None:
    """DIR, or the nearest of its parents that exists, must be a directory."""
    for path in (sweep_dir, *sweep_dir.absolute().parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"--workdir {sweep_dir}: {path} is a file, not a directory")
            return


def _recorded(sweep_dir: pathlib.Path) -> dict | None:
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            raise UserError(f"--workdir {sweep_dir} is not empty and holds no sweep "
                            f"({SWEEP_FILE}); use a new directory")
        return None
    return json.loads(path.read_text())


def _record(sweep_dir: pathlib.Path, record: dict) -> None:
    """Write DIR/sweep.json unless a sweep started at the same time wrote it first (then it must
    be this sweep): a hard link to a complete file, which fails if the name exists."""
    path, temporary = sweep_dir / SWEEP_FILE, sweep_dir / f".{SWEEP_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(record, indent=2))
    try:
        os.link(temporary, path)
    except FileExistsError:
        _check_same(json.loads(path.read_text()), record, str(sweep_dir))
    finally:
        temporary.unlink()


def _open_study(spec: spec_lib.SweepSpec, study_storage, config) -> optuna.Study:
    eval_every = spec.constants.get("train.eval_every", config.train.eval_every)
    num_steps = spec.constants.get("train.num_steps", config.train.num_steps)
    return optuna.create_study(
        study_name=storage.STUDY_NAME, storage=study_storage, direction=spec.goal,
        load_if_exists=True, sampler=runner.make_sampler(spec, spec.seed),
        pruner=runner.make_pruner(spec, eval_every, num_steps))


class _Results:
    """Writes results.csv, the plots and the hparams after every trial; shows each note once."""

    def __init__(self, study: optuna.Study, sweep_dir: pathlib.Path, spec: spec_lib.SweepSpec):
        self.study, self.sweep_dir, self.spec = study, sweep_dir, spec
        self.shown: set[str] = set()
        self.writing = threading.Lock()   # workers end trials at once; pyplot is not threadsafe

    def __call__(self) -> None:
        with self.writing:
            notes = results.write_all(self.study, self.sweep_dir, self.spec.metric,
                                      self.spec.goal, [p.key for p in self.spec.params])
        for note in notes or ():
            if note not in self.shown:
                self.shown.add(note)
                print(f"fmjax: {note}", file=sys.stderr)


def report(sweep_dir: str) -> str:
    """`fmjax sweep --workdir DIR --report`: the trials sorted by objective."""
    path = pathlib.Path(sweep_dir)
    if not (path / SWEEP_FILE).exists():
        raise UserError(f"{sweep_dir} holds no sweep ({SWEEP_FILE} is missing)")
    spec = json.loads((path / SWEEP_FILE).read_text())["sweep"]
    if not (path / results.RESULTS_CSV).exists():   # written when the first trial ends
        return (f"0 trials finished yet (of {spec['num_trials']}); objective: {spec['metric']}, "
                f"{spec['goal']}d")
    return results.table(path, spec["metric"], spec["goal"]).rstrip("\n")


def summary(study: optuna.Study, spec: spec_lib.SweepSpec) -> str:
    """One line: how many trials ended how, and the best one."""
    trials = study.get_trials(deepcopy=False)
    counts = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    line = f"sweep: {len(trials)} of {spec.num_trials} trials ({states or 'none yet'})"
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        top = study.best_trial
        line += (f"; best: trial {top.number}, {spec.metric}={top.value:.4g} "
                 f"({spec_lib.shown(top.params)})")
    return line


def _quiet_optuna() -> None:
    """Optuna's INFO lines ('A new study created', 'Trial 3 finished') stay off the console: the
    sweep prints its own line per trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(experiment: str, overrides: list[str], config: ml_collections.ConfigDict,
         sweep_file: str, sweep_dir: str, num_workers: int, storage_url: str | None,
         vectorize: bool = False) -> int:
    """Run (or continue) the sweep (`vectorize`: as groups of members of one process each,
    fmjax/sweep/member_group.py); the exit status."""
    if workdir_files.is_url(sweep_dir):
        raise UserError("--workdir for a sweep must be a local directory (its trials run here)")
    if not sweep_dir.strip():
        raise UserError("--workdir is empty; give the sweep's directory (fmjax would otherwise "
                        "write into the current one)")
    _check_directory(pathlib.Path(sweep_dir))
    _quiet_optuna()
    spec = spec_lib.load(sweep_file, config)
    if vectorize:
        member_group.check(spec)
    workers = devices.workers(num_workers)
    sweep_dir = pathlib.Path(sweep_dir).resolve()   # trials are found again by their path
    record = {"experiment": experiment, "overrides": overrides, "storage": storage_url,
              "vectorize": vectorize, "sweep": spec.to_json()}
    recorded = _recorded(sweep_dir)
    if recorded is not None:
        _check_same(recorded, record, str(sweep_dir))
    database = storage.connect(storage_url) if storage_url else None
    if database is not None:
        _check_shared(database, record)

    if signals.received:   # Ctrl-C or SIGTERM during the checks: stop before writing DIR
        print(f"fmjax: {stopped_by(signals.received[0])}", file=sys.stderr)
        return 128 + signals.received[0]

    # ---- From here on DIR is written. ----------------------------------------------------------
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if recorded is None:
        _record(sweep_dir, record)
    study = _open_study(spec, database or storage.journal(sweep_dir), config)
    study.set_user_attr("sweep", record["sweep"])
    write_results = _Results(study, sweep_dir, spec)
    sweep = runner.Sweep(study, spec, sweep_dir, experiment, overrides,
                         storage.BudgetLock(storage_url, sweep_dir), after_trial=write_results,
                         config=config,
                         group_size=member_group.group_size(spec, len(workers)) if vectorize else 1)
    received = _run_until_signal(sweep, workers)
    write_results()
    print(summary(study, spec), flush=True)
    if received:
        stopped = ("the running groups of members stopped (they keep no checkpoint: they run "
                   "again whole)" if vectorize else "the running trials saved a checkpoint")
        print(f"fmjax: {stopped_by(received[0])}: {stopped}; run the same command again to "
              "finish the sweep", file=sys.stderr)
        return 128 + received[0]
    return 0


def _run_until_signal(sweep: runner.Sweep, workers: list[devices.Worker]) -> list[int]:
    """Run the workers; SIGTERM or SIGINT stops them (each trial saves a checkpoint). The signals
    received."""
    received = signals.received   # those that came before: the workers stop at once

    def on_signal(signum, frame):
        received.append(signum)
        sweep.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if received:
        sweep.stop.set()
    try:
        sweep.run(workers)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return received


def _check_shared(database, record: dict) -> None:
    """Hosts sharing a database must run the same sweep."""
    try:
        study = optuna.load_study(study_name=storage.STUDY_NAME, storage=database)
    except KeyError:   # no study yet: this host creates it
        return
    shared = study.user_attrs.get("sweep")
    if shared is not None and shared != record["sweep"]:
        raise UserError(f"--storage: the study '{storage.STUDY_NAME}' there runs a different "
                        "sweep; give every host the same sweep file and overrides")
