"""Regression with MSE: a small MLP on scikit-learn's bundled diabetes data (offline).

Command:  fmjax train --config experiments/regression/diabetes.py --workdir runs/diabetes
Variants:
  ""          MLP 10 -> 32 -> 1, tanh, AdamW 1e-3 (weight decay 1e-2), batch 32, 1000 steps.
              Test R² 0.479 / 0.509 / 0.462 for seeds 0 / 1 / 2 (MSE 2759 / 2602 / 2849; 0.451 /
              0.491 / 0.454 at step 500), about 12 s per run.
  :linear     no hidden layer: linear regression fitted by gradient descent, to compare with
              scikit-learn's LinearRegression (the closed-form least-squares fit: R² 0.453,
              MSE 2900 on this split). Test R² 0.463 / 0.454 / 0.465 for seeds 0 / 1 / 2
              (MSE 2843 / 2894 / 2836), about 9 s per run.
  :runlocal   100 steps (fmjax/variants.py), a smoke test.
Hardware: the 2-core CPU machine, shared with other jobs; wall time of the whole command.
Data: 442 patients, 10 features standardised with training statistics; the test split is 20%
(89 patients) drawn with split_seed=42, the split of the usual tutorials. Over split seeds 0-19
LinearRegression averages R² 0.46 (0.33 to 0.59), so compare runs on one split. Predicting the
training mean scores R² -0.01 (MSE 5362). tests/test_regression.py runs this file as shipped.
"""

from fmjax import configs


def get_config(linear: bool = False):
    return configs.experiment(
        task="regression",
        model=dict(name="mlp", hidden_sizes=(), num_layers=0, residual=False) if linear else
        dict(name="mlp", hidden_sizes=(32,), activation="tanh", residual=False, dropout_rate=0.0),
        data=dict(name="diabetes", test_fraction=0.2, split_seed=42),
        train=dict(num_steps=1000, batch_size=32, eval_batch_size=89, log_every=100,
                   eval_every=500, steps_per_call=50, seed=0),
        optimizer=dict(name="adamw", learning_rate=1e-3, weight_decay=1e-2),
        # The eval split is the test split: no best-by-metric checkpoint.
        checkpoint=dict(every=500, keep=2, best_metric=""),
    )
