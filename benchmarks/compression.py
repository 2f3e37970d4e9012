"""Compression, measured end to end: `fmjax compress` on trained runs (the README's table).

MNIST-1D CNN (`experiments/mnist1d/cnn.py`, the paper's 6000 steps; its eval split is the test
set): int8 and int4 weight-only PTQ, int8 with dynamic activations, 80% magnitude pruning with and
without 1000 fine-tuning steps, gradual pruning to 80% during training (Zhu & Gupta), and a
sparsity sweep 0-95% with and without fine-tuning (a PNG). Char GPT (`gpt_char.py:cpu`, nanoGPT's
CPU recipe, trained on --text): int8 PTQ, and int8 QAT fine-tuning against a float fine-tune of
the same length (so that the extra training is not counted as quantization's gain).

    python benchmarks/compression.py [--parts cnn,sweep,gpt] [--seeds 0,1,2]
        [--text /work/shared/data/tinyshakespeare.txt] [--png benchmarks/compression_sparsity.png]
        [--out benchmarks/RESULTS.md]
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

from fmjax.metrics.writers import read_jsonl
from report import fmjax_env, provenance, run_checked, write_section

SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)
FINETUNE_STEPS = 1000
QAT_STEPS = 250
GRADUAL = ["--config.pruning.sparsity=0.8", "--config.pruning.begin_step=1000",
           "--config.pruning.end_step=4000", "--config.pruning.frequency=100"]


def fmjax(*args) -> str:
    return run_checked([sys.executable, "-m", "fmjax", *map(str, args)], fmjax_env())


def train(workdir, experiment, *overrides) -> dict:
    """Train a run; its last eval record."""
    fmjax("train", "--config", experiment, "--workdir", workdir, "--noprogress", *overrides)
    return [r for r in read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")
            if any(k.startswith("eval/") for k in r)][-1]


def compress(run, out, method, *options) -> dict:
    """`fmjax compress`; its compression.json."""
    fmjax("compress", "--workdir", run, "--out", out, "--method", method, *options)
    return json.loads((pathlib.Path(out) / "compression.json").read_text())


def mean_std(xs, spec=".3f"):
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):{spec}} ± {std:{spec}}"


CNN_METHODS = {"int8 PTQ": ("int8",), "int4 PTQ": ("int4",),
               "int8 weights + dynamic int8 activations": ("int8_dynamic",),
               "80% magnitude pruning (global), no fine-tuning": ("prune", "--sparsity=0.8"),
               f"80% magnitude pruning (global) + {FINETUNE_STEPS} fine-tuning steps":
                   ("prune", "--sparsity=0.8", f"--finetune_steps={FINETUNE_STEPS}")}


def cnn_rows(tmp: pathlib.Path, seeds: list[int]) -> list[str]:
    """One row per method: bytes, test accuracy before/after (mean ± std over seeds), latency."""
    results: dict[str, list[dict]] = {name: [] for name in CNN_METHODS}
    gradual, dense = [], []
    for seed in seeds:
        run = tmp / f"cnn{seed}"
        dense.append(train(run, "mnist1d/cnn.py", f"--config.train.seed={seed}")["eval/accuracy"])
        for name, (method, *options) in CNN_METHODS.items():
            out = tmp / f"cnn{seed}-{method}-{len(options)}"
            results[name].append(compress(run, out, method, *options))
        gradual.append(train(tmp / f"cnn{seed}-gradual", "mnist1d/cnn.py",
                             f"--config.train.seed={seed}", *GRADUAL)["eval/accuracy"])
    lines = ["| MNIST-1D CNN | weight bytes in stored dtypes (before → after) | × fewer | "
             "checkpoint bytes on disk (zstd) | × fewer | test acc before | test acc after | "
             "Δ points | CPU latency ms before → after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, runs in results.items():
        r0 = runs[0]
        before = [r["metrics_before"]["eval/accuracy"] for r in runs]
        after = [r["metrics_after"]["eval/accuracy"] for r in runs]
        delta = [100 * (a - b) for a, b in zip(after, before)]
        lines.append(
            f"| {name} | {r0['bytes_before']:,} → {r0['bytes_after']:,} | "
            f"{r0['bytes_before'] / r0['bytes_after']:.2f} | "
            f"{r0['checkpoint_bytes_before']:,} → {r0['checkpoint_bytes_after']:,} | "
            f"{r0['checkpoint_bytes_before'] / r0['checkpoint_bytes_after']:.2f} | "
            f"{mean_std(before)} | "
            f"{mean_std(after)} | {mean_std(delta, '+.2f')} | "
            f"{r0['latency_before']['median_ms']:.2f} → {r0['latency_after']['median_ms']:.2f} |")
    delta = [100 * (g - d) for g, d in zip(gradual, dense)]
    lines.append(f"| gradual pruning to 80% while training (steps 1000-4000, every 100) | — | — "
                 "| — | — | "
                 f"{mean_std(dense)} (dense run) | {mean_std(gradual)} | {mean_std(delta, '+.2f')}"
                 " | — |")
    return lines


def sparsity_sweep(tmp: pathlib.Path, seeds: list[int], png: str) -> list[str]:
    """Test accuracy against sparsity, with and without fine-tuning; the PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = {0: {s: [] for s in SPARSITIES}, FINETUNE_STEPS: {s: [] for s in SPARSITIES}}
    for seed in seeds:
        run = tmp / f"cnn{seed}"
        if not run.exists():
            train(run, "mnist1d/cnn.py", f"--config.train.seed={seed}")
        for steps, curve in curves.items():
            for s in SPARSITIES:
                out = tmp / f"sweep{seed}-{s}-{steps}"
                r = compress(run, out, "prune", f"--sparsity={s}", f"--finetune_steps={steps}")
                curve[s].append(100 * r["metrics_after"]["eval/accuracy"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for steps, curve in curves.items():
        label = f"+ {steps} fine-tuning steps" if steps else "no fine-tuning"
        ax.errorbar([100 * s for s in SPARSITIES], [statistics.mean(v) for v in curve.values()],
                    yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in curve.values()],
                    marker="o", capsize=3, label=label)
    ax.set(xlabel="sparsity (% of prunable weights set to 0, global magnitude)",
           ylabel="test accuracy (%)", title=f"MNIST-1D CNN, {len(seeds)} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    lines = ["| sparsity | " + " | ".join(f"{100 * s:.0f}%" for s in SPARSITIES) + " |",
             "|---|" + "---:|" * len(SPARSITIES)]
    for steps, curve in curves.items():
        label = f"+ {steps} fine-tuning steps" if steps else "no fine-tuning"
        lines.append(f"| {label} | " + " | ".join(mean_std(v, ".1f") for v in curve.values())
                     + " |")
    return lines + ["", f"![accuracy against sparsity]({pathlib.Path(png).name})"]


def gpt_rows(tmp: pathlib.Path, text: str) -> list[str]:
    """Char GPT: float, int8 and int4 PTQ of it, a float fine-tune and QAT fine-tunes of equal
    length (converted by `fmjax compress`), each gap taken to its own float reference."""
    data = f"--config.data.path={text}"
    run = tmp / "gpt"
    train(run, "shakespeare/gpt_char.py:cpu", data)
    finetune = [data, f"--config.init_from={run}", f"--config.train.num_steps={QAT_STEPS}",
                "--config.optimizer.schedule=constant", "--config.optimizer.learning_rate=1e-4",
                "--config.optimizer.warmup_steps=0"]
    control = train(tmp / "gpt-ft", "shakespeare/gpt_char.py:cpu", *finetune)["eval/loss"]
    lines = ["| char GPT (gpt_char.py:cpu) | weight bytes (stored dtypes) | checkpoint bytes "
             "(zstd) | whole-split val loss | gap to its float reference |",
             "|---|---:|---:|---:|---:|"]
    for method in ("int8", "int4"):
        ptq = compress(run, tmp / f"gpt-{method}", method)
        train(tmp / f"gpt-qat-{method}", "shakespeare/gpt_char.py:cpu", *finetune,
              f"--config.quantization.method={method}")
        qat = compress(tmp / f"gpt-qat-{method}", tmp / f"gpt-qat-{method}-out", method)
        f, p = ptq["metrics_before"]["eval/loss"], ptq["metrics_after"]["eval/loss"]
        q = qat["metrics_after"]["eval/loss"]
        if method == "int8":
            lines.append(f"| float (2000 steps) | {ptq['bytes_before']:,} | "
                         f"{ptq['checkpoint_bytes_before']:,} | {f:.4f} | — |")
            lines.append(f"| float fine-tune, {QAT_STEPS} more steps at lr 1e-4 (QAT's "
                         f"reference) | — | — | {control:.4f} | — |")
        lines.append(f"| {method} PTQ of the float run | {ptq['bytes_after']:,} | "
                     f"{ptq['checkpoint_bytes_after']:,} | {p:.4f} | {p - f:+.4f} |")
        lines.append(f"| {method} QAT fine-tune ({QAT_STEPS} steps), converted | "
                     f"{qat['bytes_after']:,} | {qat['checkpoint_bytes_after']:,} | {q:.4f} | "
                     f"{q - control:+.4f} |")
    sample = fmjax("sample", "--workdir", tmp / "gpt-int8", "--prompt", "ROMEO:",
                   "--max_new_tokens", 120)
    return lines + ["", "`fmjax sample` of the int8 PTQ run (prompt `ROMEO:`):", "", "```",
                    sample.strip(), "```"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="cnn,sweep,gpt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--text", help="UTF-8 text file (tinyshakespeare) for the gpt part")
    parser.add_argument("--png", default="benchmarks/compression_sparsity.png")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = args.parts.split(",")
    if "gpt" in parts and not (args.text and pathlib.Path(args.text).is_file()):
        parser.error("--text: the gpt part needs a text file (tinyshakespeare)")
    sections = []
    per_seeds = f"Seeds {args.seeds} (train.seed; mean ± std over them)."
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if "cnn" in parts:
            sections.append(("## Compression: MNIST-1D CNN", cnn_rows(tmp, seeds), per_seeds))
        if "sweep" in parts:
            sections.append(("## Compression: MNIST-1D CNN accuracy against sparsity",
                             sparsity_sweep(tmp, seeds, args.png), per_seeds))
        if "gpt" in parts:
            sections.append(("## Compression: char GPT", gpt_rows(tmp, args.text),
                             "One training run (train.seed 0)."))
    for heading, lines, seeds_text in sections:
        body = (provenance("compression.py", sys.argv[1:], ("jax", "qwix", "orbax-checkpoint"))
                + seeds_text + "\n\n" + "\n".join(lines))
        print(heading, body, sep="\n\n", flush=True)
        if args.out:
            write_section(args.out, heading, body)


if __name__ == "__main__":
    main()
