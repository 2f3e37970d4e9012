"""Learning rate x seed grid on the character GPT (nanoGPT's CPU model), selected on eval/loss:
the text source's eval split is its held-out last 10% of characters, a validation split.

Command:  fmjax sweep --config experiments/shakespeare/gpt_char.py:cpu
              --sweep experiments/shakespeare/sweep_gpt_char.py --workdir sweeps/gpt_char
              [--workers 2] [--config.data.path=input.txt]
          fmjax sweep --workdir sweeps/gpt_char --report
Trials:   3 learning rates x 3 seeds = 9 runs of the :cpu recipe (2000 steps each).
Hardware: the 2-core CPU CI machine. Measured 2026-11-30 with `--workers 2 --vectorize`
          (lr and seed are vectorisable): 7 min 28 s for the 9 trials; best eval/loss 1.757-1.769
          at lr 3e-3 (1e-3, the recipe's: 1.891-1.895; 3e-4: 2.045-2.069). README has the table.
"""

import ml_collections


def get_sweep():
    return ml_collections.ConfigDict(dict(
        method="grid",
        metric=dict(name="eval/loss", goal="minimize"),
        parameters={
            "optimizer.learning_rate": dict(values=[3e-4, 1e-3, 3e-3]),
            "train.seed": dict(values=[0, 1, 2]),
        },
    ), allow_dotted_keys=True)
