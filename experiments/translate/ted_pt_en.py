"""Portuguese -> English on TFDS `ted_hrlr_translate/pt_to_en` (TED talk transcripts, 51,785
training pairs; Qi et al. 2018), the translation example of the TensorFlow tutorials.

Command:  pip install -e ".[tfds]" && fmjax train --config experiments/translate/ted_pt_en.py --workdir runs/mt
          fmjax translate --workdir runs/mt --input "este é um problema que temos que resolver."
Data: one 8000-piece SentencePiece vocabulary trained locally on both sides of the training
pairs (stored in the workdir); pairs longer than 96 tokens are left out of training. Model:
Transformer-base-like but smaller: 4 + 4 pre-LN blocks, 8 heads, 256 wide, MLP 1024, dropout 0.1.
AdamW (lr 1e-3, warmup 4000, cosine), label smoothing 0.1, batch 128, 30k steps. Eval on the
validation split: teacher-forced loss and sacreBLEU (beam 4, length penalty 0.6).
BLEU: not measured here (needs a download).
Variants: `:runlocal` (100 steps, fmjax/variants.py; eval on 64 pairs) for a quick check.
"""

from fmjax import configs

RUNLOCAL = dict(data=dict(eval_examples=64))


def get_config():
    return configs.experiment(
        task="translation",
        model=dict(name="seq2seq", max_len=96, num_layers=4, num_decoder_layers=4, num_heads=8,
                   embed_dim=256, mlp_ratio=4, dropout_rate=0.1),
        data=dict(name="translation", tfds_name="ted_hrlr_translate/pt_to_en", source_len=96,
                  target_len=96, vocab_size=8000, eval_split="validation"),
        task_options=dict(label_smoothing=0.1, beam_size=4, length_penalty=0.6),
        train=dict(num_steps=30_000, batch_size=128, eval_batch_size=256, log_every=200,
                   eval_every=5000, steps_per_call=20, clip_grad_norm=1.0, seed=0),
        optimizer=dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine",
                       warmup_steps=4000, end_learning_rate=1e-5, b2=0.98, weight_decay=0.01),
        checkpoint=dict(every=5000, keep=2, best_metric="eval/bleu", best_mode="max"),
    )
