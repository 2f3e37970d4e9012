"""Vectorised trials: 3 seeds x 4 learning rates of the MNIST-1D MLP as one `fmjax sweep
--vectorize` (fmjax/sweep/member_group.py), against one trial run alone.

    python benchmarks/vectorized_trials.py [--seeds 0,1,2] [--lrs 0.001,0.003,0.01,0.03]
                                           [--repeats 3] [--check-steps 200]
                                           [--out benchmarks/RESULTS.md]

Every row is a whole command timed from start to exit (interpreter start-up, imports, dataset
loading, compilation, evaluation and the sweep's own work included; XLA_FLAGS unset), run in
turn, `--repeats` times (median), all on `experiments/mnist1d/mlp.py` with
`data.validation_fraction=0.1` (the sweep's objective is val/accuracy):

  solo train:       fmjax train --config mnist1d/mlp.py --workdir <tmp> (seed 0, lr 0.01)
  sweep, 1 trial:   fmjax sweep ... --sweep <a grid of that one trial>
  vectorised, N:    fmjax sweep ... --sweep <the seeds x lrs grid> --vectorize --workers N
  one by one:       fmjax sweep ... --sweep <the seeds x lrs grid> --workers 2 (once)

Goal (issue 13): the vectorised members in at most 2x the wall time of one trial. Then the curve
check: every member's train/loss at each of the first `--check-steps` steps (log_every 1) of a
vectorised sweep against its own solo `fmjax train`; goal: max relative difference <= 1e-5.
Prints a markdown table; with --out, replaces (or appends) this benchmark's section.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

from fmjax.metrics.writers import read_jsonl
from report import ROOT, fmjax_env, provenance, run_checked, write_section

EXPERIMENT = "experiments/mnist1d/mlp.py"
SWEEP_FILE = """
import ml_collections

def get_sweep():
    return ml_collections.ConfigDict(dict(
        method="grid", metric=dict(name="val/accuracy", goal="maximize"),
        parameters={{"data.validation_fraction": dict(value=0.1),
                    "train.seed": dict(values=[{seeds}]),
                    "optimizer.learning_rate": dict(values=[{lrs}])}}),
        allow_dotted_keys=True)
"""


def sweep_file(path: pathlib.Path, seeds: str, lrs: str) -> pathlib.Path:
    path.write_text(SWEEP_FILE.format(seeds=seeds, lrs=lrs))
    return path


def env() -> dict:
    """fmjax_env, with this checkout's fmjax first for the script run as a file."""
    return {**fmjax_env(), "PYTHONPATH": str(ROOT)}


def timed(cmd) -> float:
    start = time.perf_counter()
    run_checked(cmd, env())
    return time.perf_counter() - start


def solo_cmd(workdir, *overrides):
    return [sys.executable, "-m", "fmjax", "train", "--config", EXPERIMENT, "--workdir",
            str(workdir), "--noprogress", "--config.data.validation_fraction=0.1", *overrides]


def sweep_cmd(workdir, sweep: pathlib.Path, *flags):
    return [sys.executable, "-m", "fmjax", "sweep", "--config", EXPERIMENT, "--workdir",
            str(workdir), "--sweep", str(sweep), *flags]


def losses(workdir) -> np.ndarray:
    return np.array([r["train/loss"] for r in read_jsonl(workdir / "metrics.jsonl")
                     if "train/loss" in r])


def curve_check(args, tmp: pathlib.Path) -> float:
    """Max relative train/loss difference, member vs its solo run, over `--check-steps` steps."""
    short = [f"--config.train.num_steps={args.check_steps}", "--config.train.log_every=1",
             f"--config.train.eval_every={args.check_steps}"]
    grid = sweep_file(tmp / "grid.py", args.seeds, args.lrs)
    run_checked(sweep_cmd(tmp / "check", grid, "--vectorize", *short), env())
    worst = 0.0
    for member in sorted((tmp / "check" / "trials").iterdir()):
        config = json.loads((member / "config.json").read_text())
        solo = tmp / f"check_solo_{member.name}"
        run_checked(solo_cmd(solo, *short, f"--config.train.seed={config['train']['seed']}",
                             "--config.optimizer.learning_rate="
                             f"{config['optimizer']['learning_rate']!r}"), env())
        a, b = losses(member), losses(solo)
        if len(a) != args.check_steps or len(b) != args.check_steps:
            raise RuntimeError(f"{member}: {len(a)} / {len(b)} losses, not {args.check_steps}")
        worst = max(worst, float(np.max(np.abs(a - b) / np.abs(b))))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=200)
    parser.add_argument("--out", help="markdown file whose benchmark section to replace or append")
    args = parser.parse_args()
    n = len(args.seeds.split(",")) * len(args.lrs.split(","))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        one, grid = sweep_file(tmp / "one.py", "0", "0.01"), sweep_file(tmp / "grid.py",
                                                                          args.seeds, args.lrs)
        runs = {"solo `fmjax train` (seed 0, lr 0.01)": lambda r: solo_cmd(tmp / f"solo{r}"),
                "`fmjax sweep` of that one trial": lambda r: sweep_cmd(tmp / f"one{r}", one),
                f"{n} trials `--vectorize --workers 1`":
                    lambda r: sweep_cmd(tmp / f"vec1_{r}", grid, "--vectorize", "--workers", "1"),
                f"{n} trials `--vectorize --workers 2`":
                    lambda r: sweep_cmd(tmp / f"vec2_{r}", grid, "--vectorize", "--workers", "2")}
        walls = {name: [] for name in runs}
        for r in range(args.repeats):
            for name, cmd in runs.items():
                walls[name].append(timed(cmd(r)))
            print(f"repeat {r}: " + ", ".join(f"{w[-1]:.2f}" for w in walls.values()),
                  file=sys.stderr)
        one_by_one = timed(sweep_cmd(tmp / "seq", grid, "--workers", "2"))
        worst = curve_check(args, tmp)
    median = {name: statistics.median(w) for name, w in walls.items()}
    solo, trial = median[next(iter(runs))], median["`fmjax sweep` of that one trial"]
    lines = ["| command | wall s (median) | all runs s | vs solo train | vs sweep of one trial |",
             "|---|---:|---:|---:|---:|"]
    for name, w in walls.items():
        lines.append(f"| {name} | {median[name]:.2f} | {', '.join(f'{s:.2f}' for s in w)} | "
                     f"{median[name] / solo:.2f} | {median[name] / trial:.2f} |")
    lines.append(f"| {n} trials one by one `--workers 2` | {one_by_one:.2f} | (1 run) | "
                 f"{one_by_one / solo:.2f} | {one_by_one / trial:.2f} |")
    best = median[f"{n} trials `--vectorize --workers 2`"]
    md = "\n".join(lines + [
        "", f"Goal: {n} vectorised trials <= 2x one trial: {best / trial:.2f}x a sweep's trial "
        f"({'met' if best <= 2 * trial else 'missed'}), {best / solo:.2f}x a bare `fmjax train` "
        f"({'met' if best <= 2 * solo else 'missed'}). Curves: the largest relative train/loss "
        f"difference, member vs its own solo run, over the first {args.check_steps} steps: "
        f"{worst:.1e} (goal <= 1e-5: {'met' if worst <= 1e-5 else 'missed'})."])
    print(md)
    if args.out:
        body = provenance("vectorized_trials.py", sys.argv[1:], ("jax", "optax", "optuna")) + (
            "Each command whole, start to exit, run in turn, "
            f"{args.repeats} times (median); an otherwise idle machine.\n\n" + md)
        write_section(args.out, "## MNIST-1D MLP: vectorised trials (3 seeds x 4 learning rates)",
                      body)


if __name__ == "__main__":
    main()
