"""Character GPT on CPU, fmjax vs plain PyTorch: training throughput (tokens/s) at the same shape.

The model is that of `experiments/shakespeare/gpt_char.py:cpu` (nanoGPT's CPU settings: 4 layers,
4 heads, 128 wide, MLP 4x with exact GELU, context 64, batch 12, learned positions, tied
embeddings, biases, pre-LN, dropout 0; AdamW lr 1e-3 betas (0.9, 0.99), weight decay 0.1, clip
1.0), trained for `--steps` steps on the same text, one fresh subprocess per run, each pinned to
the same `--threads` CPUs (when the machine has more), runs sequential:

  fmjax:   python -m fmjax train --config experiments/shakespeare/gpt_char.py:cpu
           --config.data.path=<text> --workdir <tmp> --config.train.num_steps=<steps>
           --config.train.eval_every=<steps> --config.checkpoint.every=<steps>
           --config.train.log_every=50 --config.train.steps_per_call=50 --noprogress
           --config.optimizer.warmup_steps=<warmup_steps>
           [--config.model.use_bias=False]   (XLA_FLAGS unset, or --xla_cpu_max_isa=AVX2)
           tokens/s = median of `perf/tokens_per_sec` over the records of <tmp>/metrics.jsonl
           but the first (which includes compilation); loss = the last record's `train/loss`.
  PyTorch: python benchmarks/lm_torch.py --text <text> --steps <steps> --log_every 50
           --threads <threads> --warmup_steps <warmup_steps> [--no_bias] [--compile]
           (eager, and torch.compile unless --no_compile; the same median over 50-step windows,
           the first left out)
  bound:   python benchmarks/lm_matmul_bound.py (the step's matmuls alone through XLA, same caps
           and CPUs): an upper bound on fmjax's tokens/s, as the model's other work only adds
           time; bound / PyTorch is the largest fmjax/PyTorch ratio this machine allows

Both sides draw the same training windows (the first 90% of the text, offsets from
`numpy.random.default_rng([0, step])`), so their final train losses are comparable.
Goal: fmjax >= 1.5x PyTorch's tokens/s. Run it on an otherwise idle machine.

    python benchmarks/lm.py --text /work/shared/data/tinyshakespeare.txt [--steps 1000]
                            [--repeats 1] [--threads 2] [--warmup_steps 100] [--no_bias]
                            [--no_compile] [--max_isa avx2]
                            [--out benchmarks/RESULTS.md]

Prints a markdown table; with --out, replaces (or appends) this benchmark's section of that file.

With --speedrun it times something else, whole processes to a val loss instead (speedrun.py):
nanoGPT's CPU recipe in PyTorch vs fmjax's `gpt_char.py:cpu_speedrun`.

    python benchmarks/lm.py --speedrun --text <text> [--repeats 1] [--threads 2] [--seed 0]
                            [--out benchmarks/RESULTS.md]
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile

import speedrun
from fmjax.metrics.writers import read_jsonl
from report import fmt, fmjax_env, provenance, run_checked, write_section

HEADING = "## Character GPT on CPU: fmjax vs PyTorch tokens/s"
BOUND = "bound: fmjax's matmuls alone"
LOG_EVERY = 50
# --max_isa: caps on the vector extensions each side's code may use, to measure an AVX2-only CPU
# on an AVX-512 one: XLA's code generation (and YNNPACK's dots, through avx2_only.py); PyTorch's
# ATen kernels and oneDNN (its fp32 matmuls run MKL's Zen kernel, which is AVX2 either way).
ISA_ENV = {"avx2": ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
                    {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})}


def pin(threads):
    """A preexec_fn pinning the child to the first `threads` CPUs this process may use (None when
    there are no more than that), so both frameworks get the same cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= threads:
        return None
    return lambda: os.sched_setaffinity(0, cpus[:threads])


def run_fmjax(args):
    n = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp) / "workdir"
        launcher = ["benchmarks/avx2_only.py"] if args.max_isa == "avx2" else []
        cmd = [sys.executable, *launcher, "-m", "fmjax", "train",
               "--config", "experiments/shakespeare/gpt_char.py:cpu",
               f"--config.data.path={args.text}", "--workdir", str(workdir),
               f"--config.train.num_steps={n}", f"--config.train.eval_every={n}",
               f"--config.checkpoint.every={n}", f"--config.train.log_every={LOG_EVERY}",
               f"--config.train.steps_per_call={LOG_EVERY}",
               f"--config.optimizer.warmup_steps={args.warmup_steps}", "--noprogress"]
        if args.no_bias:
            cmd.append("--config.model.use_bias=False")
        env = {**fmjax_env(), **ISA_ENV.get(args.max_isa, ({}, {}))[0]}
        run_checked(cmd, env, preexec_fn=pin(args.threads))
        records = read_jsonl(workdir / "metrics.jsonl")
    perf = [r for r in records if "perf/tokens_per_sec" in r]
    if len(perf) < 2:
        raise RuntimeError(f"fmjax: {len(perf)} perf/tokens_per_sec records in metrics.jsonl; "
                           "need 2 or more (the first includes compilation)")
    rates = [r["perf/tokens_per_sec"] for r in perf[1:]]
    return statistics.median(rates), perf[-1]["train/loss"], rates


def run_bound(args):
    """lm_matmul_bound.py under the same caps and CPUs: tokens/s of the step's matmuls alone."""
    script = (["benchmarks/avx2_only.py", "-m", "lm_matmul_bound"] if args.max_isa == "avx2"
              else ["benchmarks/lm_matmul_bound.py"])
    env = {**fmjax_env(), **ISA_ENV.get(args.max_isa, ({}, {}))[0]}
    out = run_checked([sys.executable, *script], env, preexec_fn=pin(args.threads))
    result = json.loads(out.strip().splitlines()[-1])
    if not result["finite"]:
        raise RuntimeError("lm_matmul_bound.py: its values overflowed; the timing is not the "
                           "model's")
    return result["tokens_per_sec"], None, []


def run_torch(args, compile_):
    cmd = [sys.executable, "benchmarks/lm_torch.py", "--text", args.text, "--steps",
           str(args.steps), "--log_every", str(LOG_EVERY), "--threads", str(args.threads),
           "--warmup_steps", str(args.warmup_steps)]
    cmd += ["--no_bias"] * args.no_bias + ["--compile"] * compile_
    env = {**os.environ, **ISA_ENV.get(args.max_isa, ({}, {}))[1]}
    out = json.loads(run_checked(cmd, env, preexec_fn=pin(args.threads)).strip().splitlines()[-1])
    return out["tokens_per_sec"], out["final_train_loss"], out["tokens_per_sec_windows"]


def table(rows):
    """rows: (name, tokens/s or None, final loss or None); the first row is fmjax."""
    fmjax_rate = rows[0][1]
    lines = ["| framework | tokens/s | fmjax/this tokens/s | final train loss |",
             "|---|---:|---:|---:|"]
    for i, (name, rate, loss) in enumerate(rows):
        if i == 0:
            ratio = "—"
        else:
            ratio = fmt(fmjax_rate / rate if fmjax_rate and rate else None, ".2f")
        loss = "—" if name == BOUND else fmt(loss, ".4f")
        lines.append(f"| {name} | {fmt(rate, ',.0f')} | {ratio} | {loss} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", required=True, help="UTF-8 text file (tinyshakespeare)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup_steps", type=int, default=100,
                        help="learning-rate warm-up (the config's 100; fmjax needs fewer than --steps)")
    parser.add_argument("--no_bias", action="store_true", help="linear layers without biases")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile run")
    parser.add_argument("--max_isa", choices=sorted(ISA_ENV),
                        help="cap both sides' vector extensions (AVX2: as on an AVX2-only CPU)")
    parser.add_argument("--out", help="markdown file whose benchmark section to replace or append")
    parser.add_argument("--speedrun", action="store_true",
                        help="time nanoGPT's CPU recipe and gpt_char.py:cpu_speedrun to val 1.88")
    parser.add_argument("--seed", type=int, default=0, help="--speedrun: both runs' seed")
    args = parser.parse_args()
    args.text = str(pathlib.Path(args.text).expanduser().resolve())
    if not pathlib.Path(args.text).is_file():
        parser.error(f"--text: no such file: {args.text}")
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    # flags the other mode reads, refused rather than ignored
    other = (("steps", "warmup_steps", "no_bias", "no_compile", "max_isa") if args.speedrun
             else ("seed",))
    given = [f"--{name}" for name in other if getattr(args, name) != parser.get_default(name)]
    if given:
        parser.error(f"{', '.join(given)} {'do' if len(given) > 1 else 'does'} not apply "
                     f"{'to' if args.speedrun else 'without'} --speedrun")
    if args.speedrun:
        return speedrun.main(args, pin(args.threads))
    if args.steps < 2 * LOG_EVERY or args.steps % LOG_EVERY:
        parser.error(f"--steps must be a multiple of {LOG_EVERY}, at least {2 * LOG_EVERY}")
    if not 0 <= args.warmup_steps < args.steps:
        parser.error("--warmup_steps must be less than --steps")

    runners = [("fmjax", lambda: run_fmjax(args)),
               ("PyTorch eager", lambda: run_torch(args, False))]
    if not args.no_compile:
        runners.append(("PyTorch torch.compile", lambda: run_torch(args, True)))
    runners.append((BOUND, lambda: run_bound(args)))
    runs, errors = {name: [] for name, _ in runners}, {}
    for _ in range(args.repeats):   # interleaved, so that a noisy spell hits every side alike
        for name, runner in runners:
            if name in errors:
                continue
            try:
                runs[name].append(runner())
            except Exception as e:  # report, and go on with the other runs
                print(f"{name} failed: {e}", file=sys.stderr)
                errors[name] = e
    rows, failed, notes = [], False, []
    for name, _ in runners:
        rate = loss = None
        if name in errors:
            if name not in ("fmjax", "PyTorch eager"):   # optional rows: note, keep the rest
                lines = str(errors[name]).strip().splitlines()
                first = next((line for line in reversed(lines) if line.strip()), "")
                notes.append(f"{name} failed on this machine ({first[:200]}); skipped.")
            else:
                failed = True
        else:
            rate, loss = statistics.median(r for r, _, _ in runs[name]), runs[name][-1][1]
            for _, _, windows in filter(lambda run: run[2], runs[name]):
                print(f"{name}: tokens/s per {LOG_EVERY}-step window "
                      f"{[round(w) for w in windows]}", file=sys.stderr)
        trained = "" if name == BOUND else f", final train loss {fmt(loss, '.4f')}"
        print(f"{name}: {fmt(rate, ',.0f')} tokens/s{trained}", file=sys.stderr)
        rows.append((name, rate, loss))

    rates = {name: rate for name, rate, _ in rows}
    if rates[BOUND] and rates["PyTorch eager"]:
        notes.append(f"The matmuls alone (lm_matmul_bound.py) run at "
                     f"{rates[BOUND] / rates['PyTorch eager']:.2f}x PyTorch eager's tokens/s: "
                     "fmjax's ratio cannot exceed that here.")
    md = table(rows)
    print(md)
    for note in notes:
        print(note)
    if args.out and failed:
        print(f"Some runs failed; {args.out} left as it was.", file=sys.stderr)
    elif args.out:
        bias = "without biases" if args.no_bias else "with biases"
        body = (provenance("lm.py", sys.argv[1:], ("jax", "flax", "torch")) +
                f"`gpt_char.py:cpu` shape ({bias}), batch 12 x context 64 = 768 tokens per step, "
                f"{args.steps} steps (lr warm-up {args.warmup_steps}, then cosine to 1e-4), "
                f"{args.threads} threads each, the same training windows"
                f"{', vector extensions capped at ' + args.max_isa if args.max_isa else ''}. "
                f"tokens/s: median over {LOG_EVERY}-step windows, the first (compilation, "
                f"warm-up) left out; median over {args.repeats} interleaved run(s). Final "
                f"train loss: the loss of step {args.steps}. Goal: fmjax >= 1.5x PyTorch."
                f"\n\n{md}"
                + "".join(f"\n\n{note}" for note in notes))
        capped = f", vector extensions capped at {args.max_isa}" if args.max_isa else ""
        write_section(args.out, HEADING + capped, body)   # a capped run keeps its own section
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
