"""nanoGPT's "baby GPT" on Tiny Shakespeare (experiments/shakespeare/gpt_char.py, its default
variant): the whole `fmjax train` process timed, and the whole-split validation loss.

nanoGPT (config/train_shakespeare_char.py: 6 layers, 6 heads, 384 wide, context 256, batch 64,
dropout 0.2, 5000 steps, lr 1e-3): val loss 1.4697 in about 3 minutes on one A100, by its README.
Run by benchmarks/gpu_check.sh on a GPU.

    python benchmarks/baby_gpt.py --text tinyshakespeare.txt [--out benchmarks/RESULTS.md]
                                  [--set train.num_steps=20 ...]
"""

import argparse
import pathlib
import sys
import tempfile
import time

from fmjax.metrics.writers import read_jsonl
from report import provenance, run_checked, write_section

CONFIG = "experiments/shakespeare/gpt_char.py"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", required=True, help="UTF-8 text file (tinyshakespeare)")
    parser.add_argument("--out")
    parser.add_argument("--set", action="append", default=[], help="section.key=value override")
    args = parser.parse_args()
    if not pathlib.Path(args.text).is_file():
        parser.error(f"--text: no such file: {args.text}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fmjax", "train", "--config", CONFIG, "--workdir", tmp,
               f"--config.data.path={pathlib.Path(args.text).resolve()}", "--noprogress",
               *(f"--config.{item}" for item in args.set)]
        start = time.perf_counter()
        run_checked(cmd)
        seconds = time.perf_counter() - start
        records = read_jsonl(pathlib.Path(tmp) / "metrics.jsonl")
    evals = [r for r in records if "eval/loss" in r]
    rates = [r["perf/tokens_per_sec"] for r in records if "perf/tokens_per_sec" in r][1:]
    import jax
    device = f"{jax.devices()[0].device_kind} x {jax.device_count()}"
    table = ("| device | steps | val loss (whole split), last | best | tokens/s | wall time |\n"
             "|---|---:|---:|---:|---:|---:|\n"
             f"| {device} | {evals[-1]['step']} | {evals[-1]['eval/loss']:.4f} "
             f"| {min(r['eval/loss'] for r in evals):.4f} "
             f"| {sorted(rates)[len(rates) // 2] if rates else float('nan'):,.0f} "
             f"| {seconds:.0f} s |")
    print(table)
    if args.out:
        body = (provenance("baby_gpt.py", sys.argv[1:], ("jax", "jaxlib", "flax", "optax")) +
                "nanoGPT's baby GPT recipe (`gpt_char.py`, default variant); wall time: the whole "
                "`fmjax train` process (start-up, compilation, evals every 250 steps, checkpoints "
                "every 500). nanoGPT: val 1.4697 in about 3 min on one A100.\n\n" + table)
        write_section(args.out, f"## Baby GPT, shakespeare-char ({device})", body)


if __name__ == "__main__":
    main()
