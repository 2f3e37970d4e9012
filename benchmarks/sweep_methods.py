"""Grid vs random vs Bayesian (TPE) search at equal budget on the MNIST-1D MLP.

Each sweep tunes the learning rate and the hidden width of `experiments/mnist1d/mlp.py` (the
paper's recipe otherwise: 6000 steps of Adam, batch 100) with 10% of the training set held out
(`data.validation_fraction=0.1`) and the objective `val/accuracy`. Every method runs `--trials`
trials (the grid: 6 learning rates x 4 widths = 24) for each sweep seed (the sampler's seed and
every trial's `train.seed`). Reported per method: the best validation accuracy, the test accuracy
(`eval/accuracy`) of the trial it chose, and the sweep's wall time, as mean ± std over the seeds;
against the default recipe's test accuracy (full training set, lr 1e-2, width 100, the same seeds).

    python benchmarks/sweep_methods.py [--trials 24] [--seeds 0,1,2] [--workers 2]
                                       [--methods grid,random,bayes] [--out benchmarks/RESULTS.md]
"""

import argparse
import csv
import pathlib
import statistics
import sys
import tempfile
import time

from fmjax.metrics.writers import read_jsonl
from report import fmjax_env, provenance, run_checked, write_section

GRID = {"optimizer.learning_rate": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
        "model.hidden_size": [32, 64, 100, 200]}
RANGES = {"optimizer.learning_rate": ("log_uniform", 1e-4, 3e-1),
          "model.hidden_size": ("int_uniform", 32, 256)}

SWEEP_FILE = '''
import ml_collections

def get_sweep():
    return ml_collections.ConfigDict(dict(
        method={method!r}, seed={seed}, num_trials={trials},
        metric=dict(name="val/accuracy", goal="maximize"),
        parameters={parameters!r},
    ), allow_dotted_keys=True)
'''


def sweep_file(method: str, seed: int, trials: int) -> str:
    parameters = {"data.validation_fraction": {"value": 0.1}, "train.seed": {"value": seed}}
    if method == "grid":
        parameters.update({key: {"values": values} for key, values in GRID.items()})
    else:
        parameters.update({key: {"distribution": d, "min": lo, "max": hi}
                           for key, (d, lo, hi) in RANGES.items()})
    return SWEEP_FILE.format(method=method, seed=seed, trials=trials, parameters=parameters)


def run_sweep(method: str, seed: int, trials: int, workers: int) -> dict:
    """One sweep in a fresh directory: its wall time and results.csv's chosen trial."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "sweep.py"
        path.write_text(sweep_file(method, seed, trials))
        start = time.perf_counter()
        run_checked([sys.executable, "-m", "fmjax", "sweep", "--config", "mnist1d/mlp.py",
                     "--sweep", str(path), "--workdir", f"{tmp}/sweep",
                     "--workers", str(workers)], fmjax_env())
        wall = time.perf_counter() - start
        with open(f"{tmp}/sweep/results.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
    if len(rows) != trials:
        raise RuntimeError(f"{method} seed {seed}: {len(rows)} of {trials} trials completed")
    best = max(rows, key=lambda r: float(r["objective"]))
    return {"wall": wall, "val": float(best["objective"]), "test": float(best["eval/accuracy"]),
            "lr": float(best["optimizer.learning_rate"]), "hidden": int(best["model.hidden_size"])}


def default_recipe_accuracy(seed: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_checked([sys.executable, "-m", "fmjax", "train", "--config", "mnist1d/mlp.py",
                     "--workdir", tmp, f"--config.train.seed={seed}", "--noprogress"],
                    fmjax_env())
        return [r for r in read_jsonl(pathlib.Path(tmp) / "metrics.jsonl")
                if "eval/accuracy" in r][-1]["eval/accuracy"]


def mean_std(xs, spec=".3f"):
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):{spec}} ± {std:{spec}}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default="grid,random,bayes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["| search | trials | best val acc | test acc of the chosen trial | chosen (lr, width) "
             "per seed | wall s per sweep |", "|---|---:|---:|---:|---|---:|"]
    for method in args.methods.split(","):
        runs = [run_sweep(method, seed, args.trials, args.workers) for seed in seeds]
        chosen = ", ".join(f"({r['lr']:.2g}, {r['hidden']})" for r in runs)
        lines.append(f"| {method} | {args.trials} | {mean_std([r['val'] for r in runs])} | "
                     f"{mean_std([r['test'] for r in runs])} | {chosen} | "
                     f"{mean_std([r['wall'] for r in runs], '.0f')} |")
        print(lines[-1], flush=True)
    default = [default_recipe_accuracy(seed) for seed in seeds]
    lines.append(f"| default recipe (lr 1e-2, width 100, no validation split) | 1 | — | "
                 f"{mean_std(default)} | — | — |")
    body = (provenance("sweep_methods.py", sys.argv[1:], ("jax", "optuna")) +
            f"Seeds {args.seeds} (mean ± std over them), {args.workers} workers.\n\n" +
            "\n".join(lines))
    print(body)
    if args.out:
        write_section(args.out, "## MNIST-1D MLP: grid vs random vs Bayesian search", body)


if __name__ == "__main__":
    main()
