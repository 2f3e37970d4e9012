"""Plain PyTorch (CPU) baseline of fmjax's character GPT (`experiments/shakespeare/gpt_char.py:cpu`).

A nanoGPT-style model of the same shape as fmjax's `GPT` on that config: 4 layers, 4 heads, 128
wide, MLP 4x with exact GELU, context 64, learned positions, pre-LN (LayerNorm eps 1e-5), final
LayerNorm, output projection tied to the token embedding, dropout 0, N(0, 0.02) init with the
residual projections at 0.02 / sqrt(2 * layers). Attention is `F.scaled_dot_product_attention(
is_causal=True)` on a fused q/k/v projection. `--no_bias` drops the biases of the linear layers
(as fmjax's `model.use_bias=False`; the LayerNorms keep theirs in both).

Training follows the fmjax config: batch 12, AdamW (lr 1e-3, betas (0.9, 0.99), eps 1e-8, weight
decay 0.1 on parameters with 2+ dimensions, `fused=False`), global-norm clipping at 1.0, and the
same schedule (linear warm-up over 100 steps from 0, cosine to 1e-4 at `--steps`). The text is
char-encoded with the sorted characters of its first 90% (the training part, as fmjax does), and
step s trains on windows starting at offsets drawn from `numpy.random.default_rng([seed, s])`,
the very batches fmjax's text pipeline draws.

    python benchmarks/lm_torch.py --text /path/to/tinyshakespeare.txt [--steps 500]
                                  [--log_every 50] [--threads 2] [--seed 0] [--no_bias] [--compile]
                                  [--eval] [--estimate_every 250 --estimate_iters 20]

`--estimate_every` adds nanoGPT's loss estimates (as its train.py: at step 0 and every that many
steps, `--estimate_iters` random batches of each split); `--eval` the whole validation split.

Throughput is measured like fmjax's `perf/tokens_per_sec`: wall time per window of `--log_every`
steps; the first window (warm-up; with --compile, compilation) is left out and the median of the
others is reported. Prints progress to stderr and exactly one JSON line to stdout at the end.
"""

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias, out_std):
        super().__init__()
        self.num_heads = num_heads
        self.c_attn = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.c_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.normal_(self.c_proj.weight, std=out_std)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
                   for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class MLP(nn.Module):
    def __init__(self, embed_dim, hidden, bias, out_std):
        super().__init__()
        self.c_fc = nn.Linear(embed_dim, hidden, bias=bias)
        self.gelu = nn.GELU()   # exact (erf), as fmjax's gelu(approximate=False)
        self.c_proj = nn.Linear(hidden, embed_dim, bias=bias)
        nn.init.normal_(self.c_proj.weight, std=out_std)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio, bias, out_std):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim, eps=1e-5)
        self.attn = CausalSelfAttention(embed_dim, num_heads, bias, out_std)
        self.ln_2 = nn.LayerNorm(embed_dim, eps=1e-5)
        self.mlp = MLP(embed_dim, mlp_ratio * embed_dim, bias, out_std)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, max_len=64, num_layers=4, num_heads=4, embed_dim=128,
                 mlp_ratio=4, bias=True):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, embed_dim)
        self.wpe = nn.Embedding(max_len, embed_dim)
        for module in (self.wte, self.wpe):
            nn.init.normal_(module.weight, std=0.02)
        out_std = 0.02 / math.sqrt(2 * num_layers)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, bias, out_std)
                                    for _ in range(num_layers))
        for block in self.blocks:   # the non-residual projections: N(0, 0.02), zero biases
            for linear in (block.attn.c_attn, block.mlp.c_fc):
                nn.init.normal_(linear.weight, std=0.02)
            for linear in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
        self.ln_f = nn.LayerNorm(embed_dim, eps=1e-5)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight   # tied

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def warmup_cosine(warmup, total, peak, end):
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, total, end), as a LambdaLR factor."""
    def factor(step):
        if step < warmup:
            return step / warmup
        frac = min(step - warmup, total - warmup) / max(total - warmup, 1)
        return (end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))) / peak
    return factor


def encode(path, val_fraction=0.1):
    """Training and validation parts of the text as int64 ids, and the vocabulary size (as
    fmjax's char tokenizer: the sorted distinct characters of the training part)."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    split = int(len(text) * (1 - val_fraction))
    chars = sorted(set(text[:split]))
    lookup = np.zeros(max(map(ord, text)) + 1, np.int64)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars))
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
    return ids[:split], ids[split:], len(chars)


@torch.no_grad()
def val_loss(model, val_ids, seq_len, batch_size=128):
    """Mean next-token loss over non-overlapping windows of the validation part (fmjax's eval)."""
    model.eval()
    starts = np.arange(0, len(val_ids) - seq_len, seq_len)
    total = 0.0
    for first in range(0, len(starts), batch_size):
        window = torch.from_numpy(val_ids[starts[first:first + batch_size, None]
                                          + np.arange(seq_len + 1)])
        total += model(window[:, :-1], window[:, 1:]).item() * len(window)
    model.train()
    return total / len(starts)


@torch.no_grad()
def estimate_loss(model, ids, iters, batch_size, seq_len, seed):
    """nanoGPT's `estimate_loss` on one split: the mean loss of `iters` random batches."""
    model.eval()
    losses = [model(*batch(ids, i, seed, batch_size, seq_len)).item() for i in range(iters)]
    model.train()
    return sum(losses) / iters


def batch(ids, step, seed, batch_size, seq_len):
    starts = np.random.default_rng([seed, step]).integers(0, len(ids) - seq_len, size=batch_size)
    window = torch.from_numpy(ids[starts[:, None] + np.arange(seq_len + 1)])
    return window[:, :-1], window[:, 1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", required=True, help="UTF-8 text file (tinyshakespeare)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=12)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--warmup_steps", type=int, default=100, help="learning-rate warm-up")
    parser.add_argument("--no_bias", action="store_true", help="linear layers without biases")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--eval", action="store_true",
                        help="report the validation loss after training, as fmjax evaluates it")
    parser.add_argument("--estimate_every", type=int, default=0,
                        help="nanoGPT's eval_interval: estimate both splits' loss at step 0 and "
                             "every this many steps (0: never)")
    parser.add_argument("--estimate_iters", type=int, default=20, help="nanoGPT's eval_iters")
    args = parser.parse_args()
    if args.steps < 2 * args.log_every:
        parser.error("--steps must be at least 2 * --log_every (the first window is warm-up)")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ids, val_ids, vocab_size = encode(args.text)
    model = GPT(vocab_size, max_len=args.seq_len, bias=not args.no_bias)
    num_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99), eps=1e-8, fused=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(args.warmup_steps, args.steps, 1e-3, 1e-4))
    forward = torch.compile(model) if args.compile else model
    print(f"pytorch GPT: {num_params} parameters, vocab {vocab_size}, "
          f"{'compiled' if args.compile else 'eager'}, {torch.get_num_threads()} threads",
          file=sys.stderr)

    tokens_per_step = args.batch_size * args.seq_len
    window_rates = []
    window_start = time.perf_counter()
    estimates = []
    for step in range(args.steps + 1):
        if args.estimate_every and step % args.estimate_every == 0:
            estimates.append([estimate_loss(model, split_ids, args.estimate_iters,
                                            args.batch_size, args.seq_len, [args.seed, 1, step])
                              for split_ids in (ids, val_ids)])
            print(f"step {step}: estimated train loss {estimates[-1][0]:.4f}, "
                  f"val loss {estimates[-1][1]:.4f}", file=sys.stderr)
        if step == args.steps:
            break
        inputs, targets = batch(ids, step, args.seed, args.batch_size, args.seq_len)
        loss = forward(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if (step + 1) % args.log_every == 0:
            loss_value = loss.item()
            now = time.perf_counter()
            window_rates.append(args.log_every * tokens_per_step / (now - window_start))
            window_start = now
            print(f"step {step + 1}: train loss {loss_value:.4f}, "
                  f"{window_rates[-1]:.0f} tokens/s", file=sys.stderr)
    final_loss = loss.item()
    eval_start = time.perf_counter()
    final_val_loss = val_loss(model, val_ids, args.seq_len) if args.eval else None
    eval_seconds = time.perf_counter() - eval_start

    timed = window_rates[1:]   # the first window includes warm-up (and compilation)
    print(json.dumps({
        "framework": "pytorch", "compile": args.compile, "bias": not args.no_bias,
        "steps": args.steps, "tokens_per_step": tokens_per_step, "num_params": num_params,
        "tokens_per_sec": statistics.median(timed),
        "tokens_per_sec_windows": [round(r, 1) for r in timed],
        "first_window_tokens_per_sec": round(window_rates[0], 1),
        "final_train_loss": final_loss, "val_loss": final_val_loss,
        "val_loss_estimate": estimates[-1][1] if estimates else None,
        "eval_seconds": round(eval_seconds, 3), "threads": torch.get_num_threads(),
        "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
