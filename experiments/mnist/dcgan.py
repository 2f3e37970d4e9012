"""DCGAN (Radford et al.) on MNIST: transposed-conv generator, strided-conv discriminator, batch
norm in both, Adam (lr 2e-4, beta1 0.5) for both, the non-saturating loss.

Command:  pip install -e ".[tfds]" && fmjax train --config experiments/mnist/dcgan.py --workdir runs/gan
          fmjax sample --workdir runs/gan --num 64 --out grid.png [--interpolate]
Variants:
  ""        TFDS mnist (needs a download; not measured here), 10 epochs at batch 128.
  :digits   offline: scikit-learn's 8x8 digits, 3000 steps at batch 64.
  :hinge    hinge loss;  :wgan_gp  WGAN-GP (5 critic steps, no batch norm in the critic); not both.
  Combine with a comma, e.g. `:digits,wgan_gp`.
  :runlocal :digits for 100 steps (fmjax/variants.py), a smoke test.
Eval: eval/feature_distance (fmjax's own classifier features; not Inception FID) and a sample
grid from a fixed noise batch in workdir/images and TensorBoard.
"""

from fmjax import configs, variants


def get_config(digits: bool = False, hinge: bool = False, wgan_gp: bool = False,
               runlocal: bool = False):
    digits = digits or runlocal   # offline
    loss = variants.one_of(hinge=hinge, wgan_gp=wgan_gp) or "non_saturating"
    config = configs.experiment(
        task="gan",
        task_options=dict(loss=loss, d_steps=1,
                          discriminator_optimizer=dict(name="adam", learning_rate=2e-4, b1=0.5)),
        model=dict(name="dcgan", latent_dim=32 if digits else 100, features=32 if digits else 64),
        data=dict(name="digits") if digits else dict(name="tfds", dataset="mnist"),
        train=dict(num_steps=3000 if digits else 4690, batch_size=64 if digits else 128,
                   eval_batch_size=360 if digits else 1000, log_every=100,
                   eval_every=1000 if digits else 938, steps_per_call=100 if digits else 1,
                   seed=0),
        optimizer=dict(name="adam", learning_rate=2e-4, b1=0.5),
        # The eval split is the test split: no best-by-metric checkpoint (selecting one needs
        # config.data.validation_fraction and val/feature_distance).
        checkpoint=dict(every=1000 if digits else 938, keep=2, best_metric=""),
    )
    if wgan_gp:
        config.task_options.d_steps = 5
        config.task_options.discriminator_optimizer.update(learning_rate=1e-4, b1=0.0, b2=0.9)
        config.optimizer.update(learning_rate=1e-4, b1=0.0, b2=0.9)
        config.model.discriminator_norm = "none"
    return config
