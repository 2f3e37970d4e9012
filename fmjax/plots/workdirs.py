"""The runs a plot is asked for: run directories checked before anything is drawn, and a sweep
directory (`sweep.json`) expanded into its trials (`DIR/trials/NNNN`)."""

import pathlib

from fmjax.errors import UserError

SWEEP_SPEC = "sweep.json"   # fmjax/sweep: what marks a sweep directory


def name(path: pathlib.Path) -> str:
    """The directory's own name, also for `.` or `..` (whose `Path.name` is empty or `..`)."""
    return path.name if path.name not in ("", "..") else pathlib.Path(path).resolve().name


def run_dir(path: pathlib.Path) -> pathlib.Path:
    """`path`, if it holds an fmjax run (its `config.json`); UserError otherwise."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory (give a run's workdir)")
    if (path / SWEEP_SPEC).exists():
        raise UserError(f"{path} holds a sweep, not a run: give one of its trials "
                        f"({path / 'trials'}/NNNN)")
    if not (path / "config.json").exists():
        raise UserError(f"{path} holds no fmjax run (no config.json)")
    return path


def one_run(paths: list[pathlib.Path], kind: str) -> pathlib.Path:
    """The only run of a kind that draws one run at a time."""
    if len(paths) != 1:
        raise UserError(f"--kind {kind} draws one run; got {len(paths)} directories")
    return run_dir(paths[0])


def named_runs(paths: list[pathlib.Path]) -> dict[str, pathlib.Path]:
    """{legend name: run directory}: a run is named by its directory, a sweep's trial by the
    sweep's and its own (`sweep/0003`); by the whole path where that name is taken (two
    `runs/cnn` of different parents), numbered if that is taken too, so no run is dropped; a run
    given twice is drawn once. A running sweep's trials that have logged nothing yet are left out."""
    runs = {}

    def add(short: str, full: str, run: pathlib.Path) -> None:
        if any(run.resolve() == other.resolve() for other in runs.values()):
            return
        key, copy = (short if short not in runs else full), 2
        while key in runs:
            key, copy = f"{full} ({copy})", copy + 1
        runs[key] = run

    for path in paths:
        if (path / SWEEP_SPEC).exists():
            trials = sorted(p for p in (path / "trials").glob("*")
                            if (p / "metrics.jsonl").exists())
            if not trials:
                raise UserError(f"{path} is a sweep none of whose trials has logged yet")
            for trial in trials:
                add(f"{name(path)}/{trial.name}", f"{path}/{trial.name}", trial)
        else:
            add(name(path), str(path), run_dir(path))
    return runs
