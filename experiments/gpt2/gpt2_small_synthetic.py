"""GPT-2 small (124M parameters: 12 layers, 12 heads, 768 wide, context 1024, vocabulary 50257)
on random tokens: the throughput / MFU benchmark shape of issue 3 (nanoGPT's `train_gpt2.py`
model and optimizer). Measures speed only; the data carries no signal.

Command:  fmjax train --config experiments/gpt2/gpt2_small_synthetic.py --workdir /tmp/gpt2_mfu
          (logs perf/tokens_per_sec, perf/tflops_per_device and, on a device in fmjax/metrics/perf.py's
          table, perf/mfu; benchmarks/mfu.py wraps it)
Variants: `:runlocal` shrinks the batch to 1 x 1024 tokens and 4 steps, a smoke test.
Settings: bf16 compute with float32 parameters, no dropout, tied embeddings, biases, AdamW
(lr 6e-4, beta2 0.95, weight decay 0.1, clip 1.0), global batch 16 x 1024 tokens.
"""

from fmjax import configs

RUNLOCAL = dict(
    train=dict(num_steps=4, batch_size=1, eval_batch_size=1, log_every=2, eval_every=4,
               steps_per_call=2),
    data=dict(eval_windows=1),
    checkpoint=dict(every=4),
)


def get_config():
    return configs.experiment(
        task="lm",
        model=dict(name="gpt", max_len=1024, num_layers=12, num_heads=12, embed_dim=768,
                   dtype="bfloat16"),
        data=dict(name="synthetic_tokens", vocab_size=50257, seq_len=1024, eval_windows=16),
        train=dict(num_steps=100, batch_size=16, eval_batch_size=16, log_every=10,
                   eval_every=100, steps_per_call=10, clip_grad_norm=1.0, seed=0),
        optimizer=dict(name="adamw", learning_rate=6e-4, schedule="constant", b2=0.95,
                       weight_decay=0.1),
        checkpoint=dict(every=100, keep=1, best_metric=""),
    )
