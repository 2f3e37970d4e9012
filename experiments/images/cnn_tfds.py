"""A 2D CNN on a TFDS image-classification dataset (mnist by default; fashion_mnist, cifar10).

Command:  pip install -e ".[tfds]" && \
          fmjax train --config experiments/images/cnn_tfds.py --workdir runs/mnist_cnn
          fmjax train --config experiments/images/cnn_tfds.py:cifar10 --workdir runs/cifar_cnn
Needs a download the first time (TFDS, into ~/tensorflow_datasets); not measured on this
repository's offline machine. tests/test_tfds.py runs it under `tfds.testing.mock_data`.
Recipe: two conv-ReLU-maxpool blocks (32, 64), dense 256, dropout 0.3, AdamW 1e-3 warmup+cosine;
for cifar10, random crop (padding 4) and flips.
Variants: `:fashion_mnist` or `:cifar10` (the dataset), `:runlocal` (100 steps, fmjax/variants.py).
"""

from fmjax import configs, variants


def get_config(fashion_mnist: bool = False, cifar10: bool = False):
    dataset = variants.one_of(fashion_mnist=fashion_mnist, cifar10=cifar10) or "mnist"
    augment = dict(crop_padding=4, flip=True) if cifar10 else dict(crop_padding=0, flip=False)
    return configs.experiment(
        model=dict(name="cnn2d", features=(32, 64), hidden_size=256, dropout_rate=0.3),
        data=dict(name="tfds", dataset=dataset, **augment),
        train=dict(num_steps=5000, batch_size=128, eval_batch_size=1000, log_every=100,
                   eval_every=1000, steps_per_call=50, seed=0),
        optimizer=dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine",
                       warmup_steps=200, weight_decay=0.05),
        checkpoint=dict(every=1000, keep=2, best_metric=""),
    )
