"""BERT-style masked-LM pre-training on a text file (character tokens by default).

Command:  fmjax train --config experiments/text/bert_mlm.py --config.data.path=input.txt --workdir runs/bert_mlm
          (no `data.path`: TFDS tiny_shakespeare, which needs a download)
Model: 4 pre-LN encoder layers, 4 heads, 128 wide, context 128, dropout 0.1, the MLM head tied to
the token embedding. Masking: 15% of tokens, 80% [MASK] / 10% random / 10% kept. AdamW (lr 1e-3,
warmup 200, cosine), weight decay 0.01, batch 32, 3000 steps.
Variants: `:runlocal` (context 64, 100 steps, fmjax/variants.py) for a quick check.
Logged: train/loss and train/accuracy on the chosen tokens; eval/loss, eval/accuracy, eval/perplexity.
"""

from fmjax import configs

RUNLOCAL = dict(model=dict(max_len=64), data=dict(seq_len=64))


def get_config():
    return configs.experiment(
        task="mlm",
        model=dict(name="bert", max_len=128, num_layers=4, num_heads=4, embed_dim=128,
                   dropout_rate=0.1),
        data=dict(name="text", seq_len=128, tokenizer="char", eval_windows=512),
        train=dict(num_steps=3000, batch_size=32, eval_batch_size=128, log_every=100,
                   eval_every=500, steps_per_call=50, clip_grad_norm=1.0, seed=0),
        optimizer=dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine",
                       warmup_steps=200, end_learning_rate=1e-5, weight_decay=0.01),
        checkpoint=dict(every=500, keep=2, best_metric="eval/loss", best_mode="min"),
    )
