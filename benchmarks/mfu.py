"""GPT-2 small (124M, context 1024, bf16) training throughput and MFU on the machine's accelerator.

Runs `fmjax train --config experiments/gpt2/gpt2_small_synthetic.py` (random tokens; nothing to
download) as a subprocess and reports the median of `perf/tokens_per_sec`, `perf/tflops_per_device`
and `perf/mfu` over the logged records after the first (which includes compilation). Goal
(issue 3): MFU >= 45% on a GPU. MFU uses fmjax/metrics/perf.py's peak table (dense bf16) for the device
kind, or `--peak_tflops`.

    python benchmarks/mfu.py [--steps 100] [--log_every 10] [--batch_size 16] [--remat none] [--peak_tflops X]
                             [--out benchmarks/RESULTS.md] [--set model.num_layers=1 ...]

`--set section.key=value` overrides the config (benchmarks/gpu_check.sh --dry_run: a tiny model on
CPU). Each batch size and remat policy gets its own RESULTS.md section.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile

from fmjax.metrics.writers import read_jsonl
from report import provenance, run_checked, write_section


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--log_every", type=int, default=10, help="steps per device call and log")
    parser.add_argument("--batch_size", type=int, default=16, help="global sequences per step")
    parser.add_argument("--remat", default="none", choices=["none", "full", "save_dots"])
    parser.add_argument("--peak_tflops", type=float, default=0.0)
    parser.add_argument("--out")
    parser.add_argument("--set", action="append", default=[], help="section.key=value override")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fmjax", "train",
               "--config", "experiments/gpt2/gpt2_small_synthetic.py", "--workdir", tmp,
               f"--config.train.num_steps={args.steps}", f"--config.train.eval_every={args.steps}",
               f"--config.checkpoint.every={args.steps}",
               f"--config.train.batch_size={args.batch_size}",
               f"--config.train.eval_batch_size={args.batch_size}",
               f"--config.model.remat={args.remat}", f"--config.train.log_every={args.log_every}",
               f"--config.train.steps_per_call={args.log_every}",
               f"--config.train.peak_tflops_per_device={args.peak_tflops}", "--noprogress",
               *(f"--config.{item}" for item in args.set)]
        run_checked(cmd)
        records = read_jsonl(pathlib.Path(tmp) / "metrics.jsonl")
    timed = [r for r in records if "perf/tokens_per_sec" in r][1:]
    if not timed:
        sys.exit("no timed records: use more --steps (at least 2 logged calls)")
    median = {k: statistics.median(r[k] for r in timed) for k in timed[0] if k.startswith("perf/")}
    import jax
    device = f"{jax.devices()[0].device_kind} x {jax.device_count()}"
    mfu = f"{median['perf/mfu']:.1%}" if "perf/mfu" in median else "n/a (peak unknown)"
    context = dict(item.split("=", 1) for item in args.set).get("data.seq_len", "1024")
    table = ("| device | batch x context | remat | tokens/s | TFLOP/s per device | MFU |\n"
             "|---|---|---|---:|---:|---:|\n"
             f"| {device} | {args.batch_size} x {context} | {args.remat} "
             f"| {median['perf/tokens_per_sec']:,.0f} | {median['perf/tflops_per_device']:.1f} "
             f"| {mfu} |")
    print(table)
    if args.out:
        body = (provenance("mfu.py", sys.argv[1:], ("jax", "flax")) +
                "GPT-2 small (124M), bf16 compute, float32 parameters, AdamW; model FLOPs "
                "6N + 12LHQT per token (attention not halved); median over logged calls after "
                f"the first, {args.steps} steps.\n\n{table}")
        write_section(args.out, f"## GPT-2 small MFU ({device}, batch {args.batch_size}, "
                                f"remat {args.remat})", body)


if __name__ == "__main__":
    main()
