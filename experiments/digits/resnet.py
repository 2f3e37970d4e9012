"""A small ResNet on scikit-learn's bundled 8x8 digits (real images, offline).

Command:  fmjax train --config experiments/digits/resnet.py --workdir runs/digits_resnet
Variants: `:runlocal` (100 steps, fmjax/variants.py) for a smoke test.
Hardware: the 2-core CPU CI machine, about a minute; expected eval/accuracy about 0.98
(the test split is 360 images; see tests/test_train.py for the CI-sized check).
Recipe: ResNet with stages (2, 2) of (16, 32) channels, batch norm, random-crop augmentation,
SGD with Nesterov momentum and warmup+cosine, weight decay 5e-4 on kernels only.
"""

from fmjax import configs


def get_config():
    return configs.experiment(
        model=dict(name="resnet", stage_sizes=(2, 2), features=(16, 32)),
        data=dict(name="digits", test_fraction=0.2, split_seed=0, crop_padding=1),
        train=dict(num_steps=2000, batch_size=128, eval_batch_size=360, log_every=100,
                   eval_every=500, steps_per_call=50, seed=0),
        optimizer=dict(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                       schedule="warmup_cosine", warmup_steps=100, weight_decay=5e-4),
        checkpoint=dict(every=500, keep=2, best_metric=""),
    )
