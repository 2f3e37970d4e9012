"""Character-level GPT on Tiny Shakespeare: nanoGPT's `train_shakespeare_char` recipes.

Command:  fmjax train --config experiments/shakespeare/gpt_char.py --workdir runs/gpt
          (TFDS `tiny_shakespeare`; offline: --config.data.path=input.txt, the same text file)
          fmjax sample --workdir runs/gpt --prompt "ROMEO:" --max_new_tokens 500
Variants:
  ""         nanoGPT's "baby GPT": 6 layers, 6 heads, 384 wide, context 256, batch 64, dropout
             0.2, 5000 steps of AdamW (lr 1e-3, warmup 100, cosine to 1e-4, beta2 0.99, weight
             decay 0.1 on matrices, clip 1.0). nanoGPT: val loss 1.4697 (one A100, ~3 min).
  :cpu       nanoGPT's CPU settings: 4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 steps,
             dropout 0. nanoGPT: val loss ~1.88. fmjax on the 2-core CPU machine: README table.
  :cpu_speedrun  the :cpu model shape and eval (whole validation split, context 64) to val loss
             <= 1.88 in <= 0.4x the wall time of nanoGPT's CPU recipe (benchmarks/lm.py
             --speedrun times both). What changes, and where it comes from: rotary positions (Su
             et al., RoFormer; modded-nanogpt) instead of a learned table; Muon for the block
             matrices (Keller Jordan's modded-nanogpt, optax.contrib.muon: lr 0.03, momentum 0.95,
             Nesterov) and AdamW for embeddings, biases and norms at 6e-3; batch 24 for 225
             steps, warm-up 30 then linear decay to 0 (the speedruns' trapezoid); no weight decay;
             one eval and one checkpoint, at the end. Val loss (whole split), seeds 0/1/2:
             1.8308 / 1.8516 / 1.8542, on 22.5% of :cpu's tokens; wall times and the step-by-step
             search: benchmarks/RESULTS.md.
  :runlocal  the :cpu model for 100 steps (fmjax/variants.py), 256 eval windows, a smoke test.
Split: first 90% of the characters train, the last 10% validation (eval: all of it).
"""

from fmjax import configs

SPEEDRUN_STEPS = 225
RUNLOCAL = dict(data=dict(eval_windows=256))


def get_config(cpu: bool = False, cpu_speedrun: bool = False, runlocal: bool = False):
    config = configs.experiment(
        task="lm",
        model=dict(name="gpt", max_len=256, num_layers=6, num_heads=6, embed_dim=384,
                   dropout_rate=0.2),
        data=dict(name="text", seq_len=256, tokenizer="char"),
        train=dict(num_steps=5000, batch_size=64, eval_batch_size=64, log_every=50,
                   eval_every=250, steps_per_call=10, clip_grad_norm=1.0, seed=0),
        optimizer=dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine",
                       warmup_steps=100, end_learning_rate=1e-4, b2=0.99, weight_decay=0.1),
        checkpoint=dict(every=500, keep=2, best_metric="eval/loss", best_mode="min"),
    )
    if cpu or cpu_speedrun or runlocal:
        config.model.update(max_len=64, num_layers=4, num_heads=4, embed_dim=128,
                            dropout_rate=0.0)
        config.data.seq_len = 64
        config.train.update(num_steps=2000, batch_size=12, eval_batch_size=128, steps_per_call=50)
        config.checkpoint.every = 250
    if cpu_speedrun:
        steps = SPEEDRUN_STEPS
        # steps_per_call divides num_steps: no shorter call to compile
        config.train.update(num_steps=steps, batch_size=24, eval_every=steps, log_every=45,
                            steps_per_call=45)
        config.model.positions = "rotary"
        config.optimizer.update(name="muon", learning_rate=0.03, adam_learning_rate=6e-3,
                                momentum=0.95, nesterov=True, schedule="warmup_linear",
                                warmup_steps=30, end_learning_rate=0.0, weight_decay=0.0)
        config.checkpoint.every = steps
    return config
