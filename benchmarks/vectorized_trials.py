"""Vectorised trials: 3 seeds x 4 learning rates of the MNIST-1D MLP in one process and one
vmapped train step (fmjax/sweep/vectorized.py), against one solo `fmjax train` of the same
experiment.

    python benchmarks/vectorized_trials.py [--seeds 0,1,2] [--lrs 0.001,0.003,0.01,0.03]
                                           [--repeats 3] [--check-steps 200]
                                           [--out benchmarks/RESULTS.md]

Both sides are whole processes timed from start to exit (interpreter start-up, imports, dataset
loading, compilation, evaluation included; XLA_FLAGS unset), run in turn, `--repeats` times
(median):

  solo:       python -m fmjax train --config experiments/mnist1d/mlp.py --workdir <tmp>
  vectorised: python benchmarks/vectorized_trials.py --members-to <tmp> --seeds ... --lrs ...
              (writes <tmp>/<i>/metrics.jsonl for each member, as a sweep's trials)

Goal (issue 13): vectorised wall time <= 2x solo. Then the curve check: every member's train/loss
at each of the first `--check-steps` steps (log_every 1) against its own solo run
(`--config.train.seed=S --config.optimizer.learning_rate=LR`); goal: max relative difference
<= 1e-5. Prints a markdown table; with --out, replaces (or appends) this benchmark's section.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

from fmjax.metrics.writers import read_jsonl
from report import ROOT, fmjax_env, provenance, run_checked, write_section

EXPERIMENT = "experiments/mnist1d/mlp.py"


def members(seeds: str, lrs: str) -> list[dict]:
    return [{"train.seed": int(s), "optimizer.learning_rate": float(lr)}
            for s in seeds.split(",") for lr in lrs.split(",")]


def run_members(workdir: str, seeds: str, lrs: str, overrides: list[str]) -> None:
    """The vectorised side, in this (timed) process."""
    from fmjax import configs
    from fmjax.sweep import vectorized
    config = configs.load_experiment(EXPERIMENT)
    for override in overrides:   # KEY=VALUE, for the curve check
        key, value = override.split("=")
        section, name = key.rsplit(".", 1)
        configs.value_at(config, section)[name] = type(configs.value_at(config, key))(value)
    group = members(seeds, lrs)
    vectorized.train_members(config, group, [pathlib.Path(workdir) / str(i)
                                             for i in range(len(group))])


def env() -> dict:
    """fmjax_env, with this checkout's fmjax first for the script run as a file."""
    return {**fmjax_env(), "PYTHONPATH": str(ROOT)}


def timed(cmd) -> float:
    start = time.perf_counter()
    run_checked(cmd, env())
    return time.perf_counter() - start


def solo_cmd(workdir, *overrides):
    return [sys.executable, "-m", "fmjax", "train", "--config", EXPERIMENT,
            "--workdir", str(workdir), *overrides]


def vectorized_cmd(workdir, args, *overrides):
    return [sys.executable, "benchmarks/vectorized_trials.py", "--members-to", str(workdir),
            "--seeds", args.seeds, "--lrs", args.lrs, *overrides]


def last_accuracy(workdir) -> float:
    return [r for r in read_jsonl(workdir / "metrics.jsonl") if "eval/accuracy" in r][-1][
        "eval/accuracy"]


def losses(workdir) -> np.ndarray:
    return np.array([r["train/loss"] for r in read_jsonl(workdir / "metrics.jsonl")
                     if "train/loss" in r])


def curve_check(args, tmp: pathlib.Path) -> float:
    """Max relative train/loss difference, member vs its solo run, over `--check-steps` steps."""
    short = [f"train.num_steps={args.check_steps}", "train.log_every=1"]
    run_checked(vectorized_cmd(tmp / "check", args, *(f"--override={o}" for o in short)), env())
    worst = 0.0
    for i, member in enumerate(members(args.seeds, args.lrs)):
        solo = tmp / f"check_solo{i}"
        run_checked(solo_cmd(solo, *(f"--config.{o}" for o in short),
                             f"--config.train.seed={member['train.seed']}",
                             f"--config.optimizer.learning_rate="
                             f"{member['optimizer.learning_rate']}"), env())
        a, b = losses(tmp / "check" / str(i)), losses(solo)
        if len(a) != args.check_steps or len(b) != args.check_steps:
            raise RuntimeError(f"member {i}: {len(a)} / {len(b)} losses, not {args.check_steps}")
        worst = max(worst, float(np.max(np.abs(a - b) / np.abs(b))))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=200)
    parser.add_argument("--out", help="markdown file whose benchmark section to replace or append")
    parser.add_argument("--members-to", help=argparse.SUPPRESS)   # the timed vectorised process
    parser.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.members_to:
        run_members(args.members_to, args.seeds, args.lrs, args.override)
        return

    n = len(members(args.seeds, args.lrs))
    solo_s, vec_s = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        for r in range(args.repeats):
            solo_s.append(timed(solo_cmd(tmp / f"solo{r}")))
            vec_s.append(timed(vectorized_cmd(tmp / f"vec{r}", args)))
            print(f"repeat {r}: solo {solo_s[-1]:.2f} s, {n} members {vec_s[-1]:.2f} s",
                  file=sys.stderr)
        solo_acc = last_accuracy(tmp / "solo0")
        member_acc = [last_accuracy(tmp / "vec0" / str(i)) for i in range(n)]
        worst = curve_check(args, tmp)

    solo, vec = statistics.median(solo_s), statistics.median(vec_s)
    md = "\n".join([
        "| run | wall s (median) | all runs s | test acc | vs solo |",
        "|---|---:|---:|---:|---:|",
        f"| solo `fmjax train` (seed 0, lr 0.01) | {solo:.2f} | "
        f"{', '.join(f'{s:.2f}' for s in solo_s)} | {solo_acc:.3f} | 1.00 |",
        f"| {n} members vectorised (seeds {args.seeds} x lrs {args.lrs}) | {vec:.2f} | "
        f"{', '.join(f'{s:.2f}' for s in vec_s)} | {min(member_acc):.3f}-{max(member_acc):.3f} "
        f"| {vec / solo:.2f} |",
        "",
        f"Goal: vectorised <= 2x solo: {'met' if vec <= 2 * solo else 'missed'} "
        f"({vec / solo:.2f}x; {n} solo runs in turn would take about {n * solo:.0f} s). "
        f"Curves: the largest relative train/loss difference, member vs its own solo run, over "
        f"the first {args.check_steps} steps: {worst:.1e} (goal <= 1e-5: "
        f"{'met' if worst <= 1e-5 else 'missed'})."])
    print(md)
    if args.out:
        body = provenance("vectorized_trials.py", sys.argv[1:], ("jax", "optax")) + (
            "Wall time of each whole process, start to exit (start-up, imports, compilation and "
            f"evaluation included), {args.repeats} runs each, solo and vectorised in turn.\n\n"
            + md)
        write_section(args.out, "## MNIST-1D MLP: vectorised trials (3 seeds x 4 learning rates)",
                      body)


if __name__ == "__main__":
    main()
