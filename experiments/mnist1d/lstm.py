"""MNIST-1D LSTM: the GRU experiment's bidirectional classifier (hidden 6) with LSTM cells.

The paper (Greydanus & Kobak, 2020) has no LSTM; this is its GRUBase with the LSTM's four gates:
5,242 parameters (432 recurrent + the 480 -> 10 head) against the GRU's 5,134.
Command:  fmjax train --config experiments/mnist1d/lstm.py --workdir runs/lstm
Variants: `:runlocal` (100 steps, fmjax/variants.py) for a smoke test.
Hardware: the 2-core CPU CI machine. Result: test accuracy 89.9 / 85.7 / 88.3% (seeds 0 / 1 / 2,
mean 88.0%), about 10 s a run (the GRU's time within 5%); README table.
Recipe: the GRU's, unchanged: 6000 steps of Adam, lr 1e-2, batch 100, on the 4000/1000 split of
`make_dataset(get_dataset_args())`.
"""

from fmjax import configs


def get_config():
    return configs.experiment(
        model=dict(name="lstm", hidden_size=6, bidirectional=True),
        data=dict(name="mnist1d"),
        train=dict(num_steps=6000, batch_size=100, eval_batch_size=1000, log_every=250,
                   eval_every=1000, steps_per_call=250, seed=0),
        optimizer=dict(name="adam", learning_rate=1e-2),
        checkpoint=dict(every=1000, keep=2, best_metric=""),
    )
