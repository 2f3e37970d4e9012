"""Datasets held in host memory (class labels, or regression targets), as a `StepPipeline` of
shuffled epochs."""

import dataclasses
from typing import Callable

import numpy as np

from fmjax.data import validation
from fmjax.data.pipeline import DataInfo, StepPipeline, host_positions, host_slice


@dataclasses.dataclass
class Arrays:
    """A dataset held in host memory; the validation split is empty unless `hold_out` made one.
    `y_*` are class labels, or with `num_classes` 0 real-valued targets ([N] or [N, outputs]),
    still batched as "labels"."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    num_classes: int
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def __post_init__(self):
        if self.x_val is None:
            self.x_val, self.y_val = self.x_train[:0], self.y_train[:0]

    def eval_examples(self, index: np.ndarray) -> dict:
        return {"inputs": self.x_eval[index], "labels": self.y_eval[index]}

    def val_examples(self, index: np.ndarray) -> dict:
        return {"inputs": self.x_val[index], "labels": self.y_val[index]}

    def target_stats(self) -> dict[str, tuple[float, ...]]:
        """DataInfo's target_mean and target_std: per output, over the training split; none for
        class labels."""
        if self.num_classes:
            return {}
        y_NO = self.y_train.reshape(len(self.y_train), -1).astype(np.float64)
        return {"target_mean": tuple(map(float, y_NO.mean(0))),
                "target_std": tuple(map(float, y_NO.std(0)))}

    def hold_out(self, fraction: float, seed: int) -> "Arrays":
        """These arrays with `fraction` of the training examples moved, stratified by label (not
        for regression targets) and chosen by `seed`, to the validation split (`fraction` 0:
        unchanged)."""
        if fraction <= 0:
            return self
        labels_N = self.y_train if self.num_classes else None
        train, val = validation.holdout_index(labels_N, len(self.y_train), fraction, seed)
        return dataclasses.replace(self, x_train=self.x_train[train], y_train=self.y_train[train],
                                   x_val=self.x_train[val], y_val=self.y_train[val])


class ArrayPipeline(StepPipeline):
    """Shuffled epochs over in-memory arrays; eval over the whole eval split, padded and masked."""

    def __init__(self, arrays: Arrays, seed: int,
                 augment: Callable[..., np.ndarray] | None = None):
        self.arrays = arrays
        self.seed = seed
        self.augment = augment
        self.info = DataInfo(arrays.num_classes, tuple(arrays.x_train.shape[1:]),
                             len(arrays.x_train), len(arrays.x_eval), num_val=len(arrays.x_val),
                             **arrays.target_stats())
        self._perm_cache: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
                self.info.num_train)}
        return self._perm_cache[epoch]

    def train_batch(self, step: int, global_batch_size: int) -> dict:
        positions = host_positions(step, global_batch_size)
        epochs, offsets = np.divmod(positions, self.info.num_train)
        index = np.empty_like(positions)
        for epoch in np.unique(epochs):   # one epoch, or two where the batch crosses a boundary
            in_epoch = epochs == epoch
            index[in_epoch] = self._permutation(epoch)[offsets[in_epoch]]
        x = self.arrays.x_train[index]
        if self.augment is not None:   # the same draws on every host: see data/augment.py
            rng = np.random.default_rng([self.seed, step, 1])
            x = self.augment(x, rng, host_slice(global_batch_size), global_batch_size)
        return {"inputs": x, "labels": self.arrays.y_train[index]}

    def eval_examples(self, index: np.ndarray) -> dict:
        return self.arrays.eval_examples(index)

    def val_examples(self, index: np.ndarray) -> dict:
        return self.arrays.val_examples(index)

    def first_eval_inputs(self, n: int) -> np.ndarray:
        """The first `n` eval inputs, the same on every host (for image grids)."""
        return self.arrays.x_eval[:n]
