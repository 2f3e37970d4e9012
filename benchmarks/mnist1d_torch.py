"""Plain PyTorch (CPU) baseline of the MNIST-1D paper recipe (Greydanus & Kobak, 2020).

Models are those of greydanus/mnist1d `notebooks/models.py`; the recipe is that of
`notebooks/train.py`: Adam, lr 1e-2, batch 100, cross-entropy, on the 4000/1000 split of
`make_dataset(get_dataset_args())`. Batches come from a seeded random permutation of the training
set, redrawn every epoch. Test accuracy is evaluated every 1000 steps and at the end.

    python benchmarks/mnist1d_torch.py --model {logreg,mlp,cnn,gru,lstm} [--steps 6000] [--threads 2] [--seed 0]

Prints progress to stderr and exactly one JSON line to stdout at the end.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn


def load_dataset() -> dict:
    """fmjax's cached copy ($FMJAX_CACHE_DIR or ~/.cache/fmjax/mnist1d.npz) if any, else generate it."""
    cache = pathlib.Path(os.environ.get("FMJAX_CACHE_DIR", pathlib.Path.home() / ".cache/fmjax"))
    path = cache / "mnist1d.npz"
    if path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    from mnist1d.data import get_dataset_args, make_dataset
    return make_dataset(get_dataset_args())


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1, self.linear2, self.linear3 = nn.Linear(40, 100), nn.Linear(100, 100), nn.Linear(100, 10)

    def forward(self, x):
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


class CNN(nn.Module):
    def __init__(self, channels=25):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)         # 40 -> 19
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)  # 19 -> 10
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)  # 10 -> 5
        self.linear = nn.Linear(channels * 5, 10)

    def forward(self, x):
        h = self.conv1(x[:, None, :]).relu()
        h = self.conv2(h).relu()
        h = self.conv3(h).relu()
        return self.linear(h.flatten(1))


class Recurrent(nn.Module):
    """The notebooks' GRUBase; `rnn=nn.LSTM` gives fmjax's `lstm` (the paper has no LSTM)."""
    def __init__(self, rnn=nn.GRU, hidden_size=6, time_steps=40):
        super().__init__()
        self.rnn = rnn(input_size=1, hidden_size=hidden_size, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden_size * time_steps, 10)

    def forward(self, x):
        out, _ = self.rnn(x[:, :, None])  # [batch, time, 2 * hidden]; h0 = 0 (and c0 = 0)
        return self.linear(out.flatten(1))


MODELS = {"logreg": lambda: nn.Linear(40, 10), "mlp": MLP, "cnn": CNN, "gru": Recurrent,
          "lstm": lambda: Recurrent(nn.LSTM)}


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    acc = (model(x).argmax(-1) == y).sum().item() / len(y)
    model.train()
    return acc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--eval_every", type=int, default=1000)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset()
    x, x_test = (torch.as_tensor(data[k], dtype=torch.float32) for k in ("x", "x_test"))
    y, y_test = (torch.as_tensor(data[k], dtype=torch.long) for k in ("y", "y_test"))

    model = MODELS[args.model]()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(args.seed)
    batches_per_epoch = len(x) // args.batch_size

    start = time.perf_counter()
    for step in range(args.steps):
        if step % batches_per_epoch == 0:
            perm = torch.randperm(len(x), generator=generator)
        idx = perm[(step % batches_per_epoch) * args.batch_size:][:args.batch_size]
        loss = loss_fn(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            print(f"step {step + 1}: train loss {loss.item():.4f}, "
                  f"test accuracy {accuracy(model, x_test, y_test):.4f}", file=sys.stderr)
    test_accuracy = accuracy(model, x_test, y_test)
    train_seconds = time.perf_counter() - start
    print(f"step {args.steps}: train loss {loss.item():.4f}, test accuracy {test_accuracy:.4f}",
          file=sys.stderr)

    print(json.dumps({"framework": "pytorch", "model": args.model, "steps": args.steps,
                      "test_accuracy": test_accuracy, "train_seconds": round(train_seconds, 3),
                      "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
