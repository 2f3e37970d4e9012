"""MNIST-1D, fmjax vs plain PyTorch: whole-process wall time and final test accuracy.

For each model, runs the paper recipe (Adam 1e-2, batch 100, default 6000 steps) with each
framework, each run a fresh subprocess timed from start to exit, `--repeats` times (the table gives
the median wall time; accuracy is the same in every repeat since both sides are seeded), so the numbers include interpreter start-up, imports,
dataset loading, compilation, evaluation and (for fmjax) checkpointing and metric writing:

  fmjax:   python -m fmjax train --config experiments/mnist1d/<model>.py --workdir <tmp>
           --config.train.num_steps=<steps>   (XLA_FLAGS unset; accuracy = last eval/accuracy
           in <tmp>/metrics.jsonl)
  PyTorch: python benchmarks/mnist1d_torch.py --model <model> --steps <steps>   (CPU, 2 threads)

Both read the dataset cached by fmjax ($FMJAX_CACHE_DIR or ~/.cache/fmjax/mnist1d.npz) when it
exists. fmjax keeps its compiled programs there too (fmjax/runtime/compilation_cache.py), as for any
user: the first repeat compiles them if no earlier run did, the others load them (the wall times
of every repeat are printed). Runs are sequential; run it on an otherwise idle machine.

    python benchmarks/mnist1d.py [--models cnn,gru,lstm,mlp,logreg] [--steps 6000] [--repeats 3]
                                 [--out benchmarks/RESULTS.md]

Prints a markdown table; with --out, replaces (or appends) this benchmark's section of that file.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

from fmjax.metrics.writers import read_jsonl
from fmjax.runtime.cache import cache_dir
from report import fmjax_env, fmt, provenance, run_checked, write_section


def timed(cmd, env=None):
    """Runs `cmd` from the repo root; returns (wall seconds, stdout). Raises on failure."""
    start = time.perf_counter()
    stdout = run_checked(cmd, env)
    return time.perf_counter() - start, stdout


def run_fmjax(model, steps):
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp) / "workdir"
        wall, _ = timed([sys.executable, "-m", "fmjax", "train",
                         "--config", f"experiments/mnist1d/{model}.py", "--workdir", str(workdir),
                         f"--config.train.num_steps={steps}"], fmjax_env())
        records = read_jsonl(workdir / "metrics.jsonl")
    evals = [r for r in records if "eval/accuracy" in r]
    if not evals:
        raise RuntimeError(f"fmjax {model}: no eval/accuracy in metrics.jsonl")
    return wall, evals[-1]["eval/accuracy"]


def run_torch(model, steps):
    wall, stdout = timed([sys.executable, "benchmarks/mnist1d_torch.py", "--model", model,
                          "--steps", str(steps)])
    return wall, json.loads(stdout.strip().splitlines()[-1])["test_accuracy"]


def table(rows):
    lines = ["| model | fmjax wall s | fmjax test acc | PyTorch wall s | PyTorch test acc "
             "| fmjax/PyTorch time ratio |", "|---|---:|---:|---:|---:|---:|"]
    for model, (fj_s, fj_acc), (pt_s, pt_acc) in rows:
        ratio = fj_s / pt_s if fj_s is not None and pt_s is not None else None
        lines.append(f"| {model} | {fmt(fj_s, '.1f')} | {fmt(fj_acc, '.3f')} | {fmt(pt_s, '.1f')} "
                     f"| {fmt(pt_acc, '.3f')} | {fmt(ratio, '.2f')} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,gru,lstm,mlp,logreg")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="markdown file whose benchmark section to replace or append")
    args = parser.parse_args()

    cache = cache_dir()
    cached = (cache / "mnist1d.npz").exists()
    note = (f"Both sides read the same cached dataset ({cache / 'mnist1d.npz'})." if cached else
            f"No cached dataset at {cache / 'mnist1d.npz'}: the first fmjax run generates and caches "
            "it (inside its timing); later runs of both sides read that copy.")
    print(note, file=sys.stderr)

    rows, failed = [], False
    for model in args.models.split(","):
        results = []
        for name, run in (("fmjax", run_fmjax), ("pytorch", run_torch)):
            try:
                runs = [run(model, args.steps) for _ in range(args.repeats)]
                results.append((statistics.median(w for w, _ in runs), runs[-1][1]))
                print(f"{name} {model}: wall times {[round(w, 1) for w, _ in runs]}",
                      file=sys.stderr)
            except Exception as e:  # report, and go on with the other runs
                print(f"{name} {model} failed: {e}", file=sys.stderr)
                results.append((None, None))
                failed = True
            wall, acc = results[-1]
            print(f"{name} {model}: median wall {fmt(wall, '.1f')} s, test accuracy {fmt(acc, '.3f')}",
                  file=sys.stderr)
        rows.append((model, *results))

    md = table(rows)
    print(md)
    if args.out and failed:
        print(f"Some runs failed; {args.out} left as it was.", file=sys.stderr)
    elif args.out:
        body = (provenance("mnist1d.py", sys.argv[1:], ("jax", "torch")) +
                f"Median over {args.repeats} runs of the wall time of each whole process, start to "
                "exit (start-up, imports, compilation, evaluation and checkpointing included; "
                "fmjax loads the programs an earlier run compiled from its compilation cache), "
                f"{args.steps} steps. {note}\n\n{md}")
        write_section(args.out, f"## MNIST-1D: fmjax vs PyTorch (whole {args.steps}-step runs)", body)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
