"""Bayesian search (Optuna's TPE) over the MNIST-1D MLP's learning rate and width, selected on a
validation split held out of the training set (10%, fixed by the data seed).

Command:  fmjax sweep --config experiments/mnist1d/mlp.py --sweep experiments/mnist1d/sweep_mlp.py
              --workdir sweeps/mlp [--workers 2]
          fmjax sweep --workdir sweeps/mlp --report
Trials:   24 runs of the full recipe (6000 steps, an eval every 1000); each trial's test accuracy
          (eval/accuracy) is reported at its best val/accuracy step, never used to choose.
Hardware: the 2-core CPU CI machine, `--workers 2` (a core each): 202 s on 2026-11-30, with
          other jobs on the machine (load ~3). Result: best val/accuracy 68.25% (trial 4: hidden
          200, lr 0.0124), whose test accuracy is 65.6% (the default recipe: 65.1%, README).
          For `grid` or `random` change `method` (a grid takes `values` lists);
          `early_terminate=dict(type="hyperband", min_iter=2, eta=3)` prunes.
"""

import ml_collections


def get_sweep():
    return ml_collections.ConfigDict(dict(
        method="bayes",
        metric=dict(name="val/accuracy", goal="maximize"),
        num_trials=24,
        seed=0,
        parameters={
            "optimizer.learning_rate": dict(distribution="log_uniform", min=1e-4, max=1e-1),
            "model.hidden_size": dict(values=[50, 100, 200, 400]),
            "data.validation_fraction": dict(value=0.1),
        },
    ), allow_dotted_keys=True)
