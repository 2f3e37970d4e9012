"""A small subword GPT on LM1B (One Billion Word Benchmark, TFDS `lm1b`), packed sentences.

Command:  pip install -e ".[tfds]" && \
          fmjax train --config experiments/lm1b/gpt_small.py --workdir runs/lm1b_gpt
          fmjax sample --workdir runs/lm1b_gpt --prompt "The president said" --max_new_tokens 60
Needs a download the first time (TFDS prepares lm1b, ~1.7 GB, as ArrayRecord files into
~/tensorflow_datasets); not measured on this repository's offline machine. tests/test_lm1b.py
runs :runlocal under `tfds.testing.mock_data`.
Data: a unigram SentencePiece vocabulary of 8000 (with `</s>`) trained on the first 100k training
sentences and saved as workdir/tokenizer.model; sentences read by index in shuffled epochs, each
followed by `</s>`, packed per step into windows of 128 tokens (fmjax/data/tfds_text.py), so a
resumed run reads only the sentences of the steps it runs. Eval: the whole test split.
Variants:
  ""         6 layers, 8 heads, 512 wide, SwiGLU MLP 3x wide, rotary positions, no biases, tied
             embeddings (~24M parameters), bf16 compute; batch 256 x 128 tokens, 20k steps
             (~650M tokens, about 0.8 epoch), AdamW (lr 1e-3, warmup 1000, cosine to 1e-4,
             beta2 0.95, weight decay 0.1 on matrices, clip 1.0), no dropout (one epoch of
             data does not overfit).
  :runlocal  2 layers, 2 heads, 64 wide, vocabulary 1000 trained on 20k sentences, context 64,
             batch 16, 100 steps (fmjax/variants.py), 128 eval windows: a smoke test (CPU,
             float32).
"""

from fmjax import configs

RUNLOCAL = dict(
    model=dict(max_len=64, num_layers=2, num_heads=2, embed_dim=64, dtype="float32"),
    data=dict(seq_len=64, vocab_size=1000, tokenizer_sentences=20_000, eval_windows=128),
    train=dict(batch_size=16, eval_batch_size=64),
)


def get_config():
    return configs.experiment(
        task="lm",
        model=dict(name="gpt", max_len=128, num_layers=6, num_heads=8, embed_dim=512,
                   mlp_ratio=3, positions="rotary", activation="swiglu", use_bias=False,
                   tie_embeddings=True, dropout_rate=0.0, dtype="bfloat16"),
        data=dict(name="tfds_text", dataset="lm1b", seq_len=128, vocab_size=8000,
                  tokenizer_sentences=100_000, eval_windows=0),
        train=dict(num_steps=20_000, batch_size=256, eval_batch_size=512, log_every=100,
                   eval_every=2000, steps_per_call=50, clip_grad_norm=1.0, seed=0),
        optimizer=dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine",
                       warmup_steps=1000, end_learning_rate=1e-4, b2=0.95, weight_decay=0.1),
        # lm1b has train and test splits only; eval is the test split, so no best checkpoint.
        checkpoint=dict(every=2000, keep=2, best_metric=""),
    )
