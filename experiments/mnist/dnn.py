"""The seed articles' DNN: a 784 -> 2048 -> 1024 -> 10 ReLU MLP on MNIST (no convolutions, no
residual connections), trained with Adam 1e-3, batch 128, for 10 epochs.

Command:  pip install -e ".[tfds]"
          fmjax train --config experiments/mnist/dnn.py --workdir runs/dnn
          fmjax train --config experiments/mnist/dnn.py:digits --workdir runs/dnn_digits
Variants:
  ""          TFDS mnist, 28x28 pixels in [0, 1] flattened to 784 inputs (needs a download; not
              measured here).
  :digits     offline: scikit-learn's 8x8 digits (64 inputs -> 2048 -> 1024 -> 10), 1000 steps
              (about 90 epochs of the 1437 training images). Measured on the 2-core CPU machine
              (shared with other jobs): test accuracy (360 images) 98.6 / 98.3 / 98.6% for seeds
              0 / 1 / 2 (98.1% at step 500), about 20 s per run.
  :runlocal   :digits for 100 steps (fmjax/variants.py), a smoke test.
"""

from fmjax import configs


def get_config(digits: bool = False, runlocal: bool = False):
    digits = digits or runlocal   # offline
    return configs.experiment(
        model=dict(name="mlp", hidden_sizes=(2048, 1024), activation="relu", residual=False,
                   dropout_rate=0.0),
        data=(dict(name="digits", test_fraction=0.2, split_seed=0) if digits else
              dict(name="tfds", dataset="mnist")),
        train=dict(num_steps=1000 if digits else 4690, batch_size=128,
                   eval_batch_size=360 if digits else 1000, log_every=100,
                   eval_every=500 if digits else 469, steps_per_call=50 if digits else 1,
                   seed=0),
        optimizer=dict(name="adam", learning_rate=1e-3),
        # The eval split is the test split: no best-by-metric checkpoint.
        checkpoint=dict(every=500 if digits else 938, keep=2, best_metric=""),
    )
