"""A sweep's results: one row per trial in `DIR/results.csv`, the table `fmjax sweep --report`
prints, and (fmjax/sweep/plots.py, fmjax/sweep/hparams.py) PNG plots and TensorBoard hparams.

A trial's objective is the best value of the objective metric over its evals, and its other
`val/*` and `eval/*` metrics are those of that same eval: the checkpoint model selection keeps.
The sweep stores them as trial user attrs when a trial ends; a trial without them (running,
pruned, failed) is read from its own `metrics.jsonl`, so the table shows how far it got.
"""

import collections
import csv
import io
import math
import pathlib

from fmjax.metrics.writers import read_jsonl
from fmjax.runtime import workdir_files

GOALS = ("maximize", "minimize")
METRIC_PREFIXES = ("val/", "eval/")   # val/* first: they chose the trial, eval/* is its test
RESULTS_CSV = "results.csv"


def best_eval(records: list[dict], metric_name: str, goal: str) -> dict | None:
    """The record (an eval) with the best finite `metric_name` by `goal`; the earliest of equal
    ones, as a best checkpoint keeps the first; None if no record has it."""
    sign = 1.0 if goal == "minimize" else -1.0
    evals = [r for r in records if math.isfinite(r.get(metric_name, math.nan))]
    return min(evals, key=lambda r: sign * r[metric_name], default=None)


def trial_workdir(trial, sweep_dir) -> pathlib.Path:
    """The trial's fmjax workdir: its `workdir` attr (set on the host that ran it), else
    `DIR/trials/NNNN`."""
    default = pathlib.Path(sweep_dir) / "trials" / f"{trial.number:04d}"
    return workdir_files.as_path(trial.user_attrs.get("workdir", default))


def _split_metrics(values: dict) -> dict:
    return {k: v for k, v in values.items() if k.startswith(METRIC_PREFIXES)}


def _from_metrics_file(trial, sweep_dir, metric_name: str, goal: str) -> dict:
    """objective, best_step and metrics of the trial's best eval so far in its metrics.jsonl."""
    path = trial_workdir(trial, sweep_dir) / "metrics.jsonl"
    best = best_eval(read_jsonl(path), metric_name, goal) if path.exists() else None
    if best is None:
        return {"objective": None, "best_step": None}
    return {"objective": best[metric_name], "best_step": best["step"], **_split_metrics(best)}


def _wall_s(trial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)


def rows(study, sweep_dir, metric_name: str, goal: str, param_keys) -> list[dict]:
    """One dict per trial of `study`, by trial number: trial, state, objective, each of
    `param_keys`, the val/* and eval/* metrics at the best eval, best_step, wall_s."""
    import optuna

    table = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        attrs = trial.user_attrs
        if "best_step" in attrs:
            found = {"objective": attrs.get(metric_name), "best_step": attrs["best_step"],
                     **_split_metrics(attrs)}
        else:
            found = _from_metrics_file(trial, sweep_dir, metric_name, goal)
        # Only a completed trial's value is its objective: Optuna gives a pruned one the value
        # of its last report, which need not be its best.
        if trial.state == optuna.trial.TrialState.COMPLETE:
            found["objective"] = trial.value
        table.append({"trial": trial.number, "state": trial.state.name,
                      "objective": found.pop("objective"),
                      **{key: trial.params.get(key) for key in param_keys},
                      **found, "wall_s": _wall_s(trial)})
    return table


def columns(table: list[dict], param_keys) -> list[str]:
    """The CSV's columns: trial, state, objective, the params, every val/* metric then every
    eval/* metric (each sorted by name), best_step, wall_s."""
    metrics = {k for row in table for k in row if k.startswith(METRIC_PREFIXES)}
    by_split = [sorted(k for k in metrics if k.startswith(p)) for p in METRIC_PREFIXES]
    return ["trial", "state", "objective", *param_keys, *sum(by_split, []), "best_step", "wall_s"]


def _cell(value) -> str:
    return "" if value is None else str(value)


def csv_text(table: list[dict], param_keys) -> str:
    """`table` as CSV text: a header line, then a line per row; an empty cell for no value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = columns(table, param_keys)
    writer.writerow(header)
    writer.writerows([_cell(row.get(name)) for name in header] for row in table)
    return out.getvalue()


def write_all(study, sweep_dir, metric_name: str, goal: str, param_keys) -> list[str]:
    """Writes `DIR/results.csv`, `DIR/plots/*.png` and `DIR/hparams/` for `study`, each file whole
    or not at all; returns notes for the user (plots skipped for want of matplotlib), for the
    caller to show once."""
    from fmjax.sweep import hparams, plots   # matplotlib, tensorboardX: only when writing

    sweep_dir = pathlib.Path(sweep_dir)
    table = rows(study, sweep_dir, metric_name, goal, param_keys)
    workdir_files.write_atomic(sweep_dir / RESULTS_CSV, csv_text(table, param_keys).encode())
    metrics = [k for k in columns(table, param_keys) if k.startswith(METRIC_PREFIXES)]
    hparams.write(sweep_dir / "hparams", table, param_keys, metrics)
    return plots.write(study, sweep_dir / "plots", metric_name, param_keys)


# ---- The table of `fmjax sweep --report` -----------------------------------------------------

def _sweep_metric(sweep_dir: pathlib.Path) -> dict:
    """The `metric` entry (name, goal) of the sweep spec in `DIR/sweep.json`, wherever it nests."""
    pending = [workdir_files.read_json(sweep_dir / "sweep.json", "the sweep's spec")]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if isinstance(value.get("metric"), dict) and value["metric"].get("goal") in GOALS:
                return value["metric"]
            pending.extend(value.values())
    raise workdir_files.damaged(sweep_dir / "sweep.json", "the sweep's spec", "no metric.goal")


def _shown(column: str, text: str) -> str:
    """A cell as the table shows it: numbers to 4 significant digits, ints and words as they are."""
    try:
        number = float(text)
    except ValueError:
        return text
    if column in ("trial", "best_step") or not math.isfinite(number) or "." not in text:
        return text
    return f"{number:.4g}"


def _table_columns(header: list[str], metric_name: str) -> list[str]:
    """What fits a terminal (results.csv has every metric): trial, state, objective, the params,
    then for val/ and eval/ the objective's metric (unless it is the objective) and accuracy,
    or else loss; best_step."""
    base = metric_name.split("/", 1)[-1]
    params = [k for k in header[3:]
              if not k.startswith(METRIC_PREFIXES) and k not in ("best_step", "wall_s")]
    shown = ["trial", "state", "objective", *params]
    for prefix in METRIC_PREFIXES:
        for name in dict.fromkeys([base, "accuracy", "loss"]):
            if prefix + name in header and prefix + name != metric_name:
                shown.append(prefix + name)
                if name != base:
                    break
    return shown + ["best_step"]


def _aligned(cells: list[list[str]]) -> list[str]:
    """Rows of cells as lines: a column of numbers right-aligned, any other left-aligned."""
    numeric = [all(_is_number(row[i]) or not row[i] for row in cells[1:])
               for i in range(len(cells[0]))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.rjust(w) if right else c.ljust(w)
                      for c, w, right in zip(row, widths, numeric)).rstrip() for row in cells]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table(sweep_dir, metric_name: str | None = None, goal: str | None = None) -> str:
    """`DIR/results.csv` as aligned text under a line that names the objective, best objective
    first by `goal` (trials with no value yet last, by number). `metric_name` and `goal` default
    to those of `DIR/sweep.json`."""
    sweep_dir = pathlib.Path(sweep_dir)
    if metric_name is None or goal is None:
        metric = _sweep_metric(sweep_dir)
        metric_name, goal = metric_name or metric["name"], goal or metric["goal"]
    path = sweep_dir / RESULTS_CSV
    header, *lines = list(csv.reader(io.StringIO(
        workdir_files.read_bytes(path, "the sweep's results").decode())))
    if header[:3] != ["trial", "state", "objective"]:
        raise workdir_files.damaged(path, "the sweep's results", "not a results table")
    records = [dict(zip(header, line)) for line in lines]
    sign = -1.0 if goal == "maximize" else 1.0

    def order(record):
        value = float(record["objective"]) if record["objective"] else math.nan
        return math.isnan(value), 0.0 if math.isnan(value) else sign * value, int(record["trial"])

    shown = _table_columns(header, metric_name)
    cells = [shown] + [[_shown(name, r[name]) for name in shown]
                       for r in sorted(records, key=order)]
    states = collections.Counter(r["state"].lower() for r in records)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    title = (f"{len(records)} trials{f' ({counts})' if counts else ''}; "
             f"objective: {metric_name}, {goal}d")
    return "\n".join([title, *_aligned(cells)]) + "\n"
