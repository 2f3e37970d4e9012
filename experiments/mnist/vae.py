"""VAE on binarized MNIST: the flax example's recipe (500-unit MLP encoder and decoder, 20
latents, Adam 1e-3, batch 128, 10 epochs); the flax example reports a test negative ELBO of
about 104 nats.

Command:  pip install -e ".[tfds]" && fmjax train --config experiments/mnist/vae.py --workdir runs/vae
          fmjax sample --workdir runs/vae --num 64 --out grid.png
Variants:
  ""            TFDS mnist, pixels binarized at 0.5 (needs a download; not measured here).
  :conv         the same with the small conv encoder / transposed-conv decoder.
  :digits       offline: scikit-learn's 8x8 digits, binarized at 0.5, 3000 steps, batch 128.
  :latent2      2 latents instead of 20, so the latent space can be drawn as it is
                (`fmjax plot WORKDIR --kind latent --out latent.png`, Kingma & Welling fig. 4).
                `:digits,latent2` (seed 0, 3000 steps, 13 s on a busy 2-core CPU): test
                eval/neg_elbo 19.70 nats (20 latents: 18.41), eval/iw_nll 19.00, eval/kl 3.47.
  Combine with a comma: `:digits,conv` (offline, conv networks), `:digits,latent2`.
  :runlocal     :digits for 100 steps (fmjax/variants.py), a smoke test.
Eval (every `train.eval_every` steps, whole test split): eval/neg_elbo and eval/iw_nll (k=100
importance samples) in nats per image, eval/kl, eval/feature_distance; PNG grids of
reconstructions and prior samples in workdir/images and TensorBoard.
"""

from fmjax import configs


def get_config(digits: bool = False, conv: bool = False, latent2: bool = False,
               runlocal: bool = False):
    digits = digits or runlocal   # offline
    return configs.experiment(
        task="vae",
        task_options=dict(iw_samples=100),
        model=dict(name="vae", latent_dim=2 if latent2 else 20, hidden_size=500,
                   network="conv" if conv else "mlp"),
        data=(dict(name="digits", binarize=True) if digits else
              dict(name="tfds", dataset="mnist", binarize=True)),
        train=dict(num_steps=3000 if digits else 4690, batch_size=128,
                   eval_batch_size=360 if digits else 1000, log_every=100,
                   eval_every=1000 if digits else 469 * 2, steps_per_call=100 if digits else 1,
                   seed=0),
        optimizer=dict(name="adam", learning_rate=1e-3),
        # The eval split is the test split: no best-by-metric checkpoint (selecting one needs
        # config.data.validation_fraction and val/neg_elbo).
        checkpoint=dict(every=1000 if digits else 938, keep=2, best_metric=""),
    )
