"""Learning rate x seed grid on the character GPT (nanoGPT's CPU model), selected on eval/loss:
the text source's eval split is its held-out last 10% of characters, a validation split.

Command:  fmjax sweep --config experiments/shakespeare/gpt_char.py:cpu
              --sweep experiments/shakespeare/sweep_gpt_char.py --workdir sweeps/gpt_char
              [--workers 2] [--config.data.path=input.txt]
          fmjax sweep --workdir sweeps/gpt_char --report
Trials:   3 learning rates x 3 seeds = 9 runs of the :cpu recipe (2000 steps each).
Hardware: the 2-core CPU CI machine. Time and result: not measured yet (one :cpu run: see the
          README's char-GPT row; the grid costs about 9 of them).
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
