"""Time to val loss 1.88 on CPU: fmjax's `gpt_char.py:cpu_speedrun` vs nanoGPT's CPU recipe.

`python benchmarks/lm.py --speedrun --text <text>` runs, one after the other (interleaved when
`--repeats` > 1), each as a whole process pinned to the same `--threads` CPUs:

  nanoGPT's recipe in PyTorch (its README's CPU command: 4 layers, 4 heads, 128 wide, context 64,
  batch 12, 2000 iterations, dropout 0, AdamW lr 1e-3 warm-up 100 then cosine to 1e-4, loss
  estimates of 20 batches per split every 250 steps):
      python benchmarks/lm_torch.py --text <text> --steps 2000 --log_every 250
             --estimate_every 250 --estimate_iters 20 --eval --threads <threads> --seed <seed>
      (its `--eval` pass over the whole validation split, which nanoGPT does not run, is timed
      by the script itself and taken off its wall time)
  fmjax:  python -m fmjax train --config experiments/shakespeare/gpt_char.py:cpu_speedrun
             --config.data.path=<text> --workdir <tmp> --config.train.seed=<seed> --noprogress

Both report the loss over the whole validation split (non-overlapping 64-character windows);
nanoGPT's own 20-batch estimate is shown too. Goal: fmjax's whole-split val loss <= 1.88 in at
most 0.4x the PyTorch recipe's wall time.
"""

import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

from fmjax.metrics.writers import read_jsonl
from report import fmt, fmjax_env, provenance, run_checked, write_section

HEADING = "## Character GPT on CPU: time to val loss 1.88, fmjax speedrun vs nanoGPT's recipe"
CONFIG = "experiments/shakespeare/gpt_char.py:cpu_speedrun"
GOAL_LOSS, GOAL_RATIO = 1.88, 0.4


def timed(run) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of the child processes, run()'s result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result


def run_nanogpt(args, seed: int, preexec_fn) -> dict:
    cmd = [sys.executable, "benchmarks/lm_torch.py", "--text", args.text, "--steps", "2000",
           "--log_every", "250", "--estimate_every", "250", "--estimate_iters", "20", "--eval",
           "--threads", str(args.threads), "--seed", str(seed)]
    wall, cpu, out = timed(lambda: run_checked(cmd, preexec_fn=preexec_fn))
    result = json.loads(out.strip().splitlines()[-1])
    return dict(wall=wall - result["eval_seconds"], cpu=cpu, val=result["val_loss"],
                estimate=result["val_loss_estimate"])


def run_speedrun(args, seed: int, preexec_fn) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp) / "workdir"
        cmd = [sys.executable, "-m", "fmjax", "train", "--config", CONFIG,
               f"--config.data.path={args.text}", "--workdir", str(workdir),
               f"--config.train.seed={seed}", "--noprogress"]
        wall, cpu, _ = timed(lambda: run_checked(cmd, fmjax_env(), preexec_fn=preexec_fn))
        evals = [r["eval/loss"] for r in read_jsonl(workdir / "metrics.jsonl") if "eval/loss" in r]
    return dict(wall=wall, cpu=cpu, val=evals[-1], estimate=None)


def table(rows) -> str:
    """rows: (name, [run dicts]); the first is nanoGPT's recipe, the ratio is to its median."""
    base = statistics.median(r["wall"] for r in rows[0][1])
    lines = ["| run | wall s (median) | CPU s (median) | wall / nanoGPT recipe | "
             "val loss, whole split | nanoGPT's 20-batch val estimate |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, runs in rows:
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        vals = ", ".join(fmt(r["val"], ".4f") for r in runs)
        estimate = runs[-1]["estimate"]
        lines.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {wall / base:.2f} | {vals} | "
                     f"{'—' if estimate is None else fmt(estimate, '.4f')} |")
    return "\n".join(lines)


def main(args, preexec_fn) -> None:
    """Runs both, prints the table, and with `args.out` writes it as a RESULTS.md section."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [("nanoGPT's CPU recipe, PyTorch eager (2000 steps x 768 tokens)", []),
            (f"fmjax `{CONFIG.split('/')[-1]}`", [])]
    for repeat in range(args.repeats):
        for (name, runs), runner in zip(rows, (run_nanogpt, run_speedrun)):
            runs.append(runner(args, args.seed, preexec_fn))
            print(f"{name}, run {repeat + 1}: {runs[-1]}", file=sys.stderr)
    md = table(rows)
    print(md)
    if args.out:
        body = (provenance("lm.py", sys.argv[1:], ("jax", "flax", "optax", "torch")) +
                f"Each run is one whole process (start-up, compilation and evals included), "
                f"{args.threads} thread(s), seed {args.seed}, {args.repeats} interleaved "
                f"repeat(s). Goal: fmjax's whole-split val loss <= {GOAL_LOSS} in <= "
                f"{GOAL_RATIO}x the wall time of nanoGPT's recipe. Load average before the "
                f"runs (1, 5, 15 min): {load}.\n\n{md}")
        write_section(args.out, HEADING, body)
