"""Offline translation: integers written as English words -> Spanish words (0 to 999,999; e.g.
"twenty one thousand five" -> "veintiún mil cinco"), with an encoder–decoder Transformer.

Command:  fmjax train --config experiments/translate/synthetic.py --workdir runs/mt_numbers
          fmjax translate --workdir runs/mt_numbers --input "three hundred forty two"
Data: 20,000 training numbers, 500 held-out eval numbers never seen in training; one shared
100-piece SentencePiece vocabulary. Model: 2 + 2 pre-LN blocks, 4 heads, 128 wide. AdamW (lr 2e-3,
warmup 100, cosine), label smoothing 0.1, batch 64, 1000 steps. Eval: teacher-forced loss and
sacreBLEU of beam-search (4 beams, length penalty 0.6) translations.
Variants: `:runlocal` (100 steps, fmjax/variants.py) for a quick check.
Measured (2-core CPU, 70 to 88 s a run): eval/bleu 100.0 / 100.0 / 100.0 for seeds 0 / 1 / 2
(eval/loss 0.105); BLEU passes 99.9 by step 500.
"""

from fmjax import configs


def get_config():
    return configs.experiment(
        task="translation",
        model=dict(name="seq2seq", max_len=20, num_layers=2, num_decoder_layers=2, num_heads=4,
                   embed_dim=128, dropout_rate=0.0),
        data=dict(name="synthetic_translation", source="en", target="es", num_train=20_000,
                  num_eval=500, source_len=16, target_len=20, vocab_size=100),
        task_options=dict(label_smoothing=0.1, beam_size=4, length_penalty=0.6),
        train=dict(num_steps=1000, batch_size=64, eval_batch_size=250, log_every=100,
                   eval_every=250, steps_per_call=50, clip_grad_norm=1.0, seed=0),
        optimizer=dict(name="adamw", learning_rate=2e-3, schedule="warmup_cosine",
                       warmup_steps=100, end_learning_rate=1e-5, weight_decay=0.01),
        checkpoint=dict(every=250, keep=2, best_metric="eval/bleu", best_mode="max"),
    )
