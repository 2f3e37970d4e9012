"""nanoGPT's validation-loss estimator applied to an fmjax language-model checkpoint.

nanoGPT reports `estimate_loss()`: the mean loss of `eval_iters` batches of `batch_size` random
windows of the validation split (its CPU recipe: 20 x 12 windows of 64 tokens). fmjax's eval
covers the whole split instead. This prints that estimate for several draws, so a figure quoted
from nanoGPT can be read against its spread, next to fmjax's whole-split loss.

    python tools/lm_eval_estimate.py --workdir runs/gpt_cpu --text input.txt [--eval_iters 20]
                                     [--batch_size 12] [--draws 10]
"""

import argparse

import jax
import numpy as np
import optax
from absl import logging

from fmjax import runs
from fmjax.data.text import Text
from fmjax.metrics.writers import read_jsonl


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--text", required=True, help="the text file the run trained on")
    parser.add_argument("--eval_iters", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=12)
    parser.add_argument("--draws", type=int, default=10)
    args = parser.parse_args()
    logging.set_verbosity(logging.ERROR)   # keep orbax's read-only notices off the console
    run = runs.load(args.workdir)
    data = run.config.data
    pipeline = Text(path=args.text, seq_len=data.seq_len, val_fraction=data.val_fraction,
                    tokenizer=data.tokenizer, vocab_size=data.vocab_size
                    ).pipeline(0, args.workdir)
    ids, t = pipeline.eval_ids, data.seq_len

    @jax.jit
    def loss(inputs, targets):
        logits = run.task.model.apply({"params": run.params}, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    estimates = []
    for draw in range(args.draws):
        rng = np.random.default_rng(draw)
        starts = rng.integers(0, len(ids) - t, (args.eval_iters, args.batch_size))
        windows = ids[starts[..., None] + np.arange(t + 1)]
        estimates.append(float(np.mean([loss(w[:, :-1], w[:, 1:]) for w in windows])))
    whole = [r for r in read_jsonl(f"{args.workdir}/metrics.jsonl") if "eval/loss" in r][-1][
        "eval/loss"]
    print(f"nanoGPT-style estimates ({args.eval_iters} x {args.batch_size} windows), "
          f"{args.draws} draws: min {min(estimates):.4f}, median {np.median(estimates):.4f}, "
          f"max {max(estimates):.4f}; whole validation split (fmjax eval): {whole:.4f}")


if __name__ == "__main__":
    main()
