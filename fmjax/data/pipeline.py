"""In-memory pipelines whose batch at step s is a pure function of (seed, s).

That makes resume exact without saving iterator state: the checkpoint's step is the data
position. Each host takes only its own slice of every global batch.
"""

import dataclasses
from typing import Callable, Iterator

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the task and model need to know about a dataset."""
    num_classes: int
    input_shape: tuple[int, ...]   # one example, no batch dimension
    num_train: int
    num_eval: int
    vocab_size: int = 0            # token inputs: ids are < vocab_size (0: inputs are not tokens)
    input_dtype: str = "float32"


@dataclasses.dataclass
class Arrays:
    """A classification dataset held in host memory."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    num_classes: int


def _host_slice(global_size: int) -> slice:
    per_host = global_size // jax.process_count()
    start = jax.process_index() * per_host
    return slice(start, start + per_host)


class ArrayPipeline:
    """Shuffled epochs over in-memory arrays; eval over the whole eval split, padded and masked."""

    def __init__(self, arrays: Arrays, seed: int,
                 augment: Callable[..., np.ndarray] | None = None):
        self.arrays = arrays
        self.seed = seed
        self.augment = augment
        self.info = DataInfo(arrays.num_classes, tuple(arrays.x_train.shape[1:]),
                             len(arrays.x_train), len(arrays.x_eval))
        self._perm_cache: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
                self.info.num_train)}
        return self._perm_cache[epoch]

    def train_batch(self, step: int, global_batch_size: int) -> dict:
        """This host's part of the global batch for optimizer step `step`."""
        positions = step * global_batch_size + np.arange(global_batch_size)[
            _host_slice(global_batch_size)]
        epochs, offsets = np.divmod(positions, self.info.num_train)
        index = np.empty_like(positions)
        for epoch in np.unique(epochs):   # one epoch, or two where the batch crosses a boundary
            in_epoch = epochs == epoch
            index[in_epoch] = self._permutation(epoch)[offsets[in_epoch]]
        x = self.arrays.x_train[index]
        if self.augment is not None:   # the same draws on every host: see data/augment.py
            rng = np.random.default_rng([self.seed, step, 1])
            x = self.augment(x, rng, _host_slice(global_batch_size), global_batch_size)
        return {"inputs": x, "labels": self.arrays.y_train[index]}

    def train_iterator(self, start_step: int, global_batch_size: int) -> Iterator[dict]:
        step = start_step
        while True:
            yield self.train_batch(step, global_batch_size)
            step += 1

    def assets(self) -> dict[str, bytes]:
        return {}

    def eval_batches(self, global_batch_size: int) -> Iterator[dict]:
        """The eval split in global batches of `global_batch_size`; padding has mask False; `index`
        numbers the examples, so per-example randomness can be a function of it."""
        n = self.info.num_eval
        for start in range(0, n, global_batch_size):
            index = np.arange(start, start + global_batch_size)[_host_slice(global_batch_size)]
            mask = index < n
            index = np.minimum(index, n - 1)
            yield {"inputs": self.arrays.x_eval[index], "labels": self.arrays.y_eval[index],
                   "index": index.astype(np.int32), "mask": mask}

    def first_eval_inputs(self, n: int) -> np.ndarray:
        """The first `n` eval inputs, the same on every host (for image grids)."""
        return self.arrays.x_eval[:n]
