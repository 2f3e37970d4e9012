"""The data pipeline interface: what the train loop, eval and the tasks may ask of any source.

A source's `pipeline(seed, workdir)` returns a `Pipeline`. The loop reads only `info`,
`train_iterator`, `eval_batches` (of the eval split, and of the validation split when
`info.num_val` > 0: fmjax/data/validation.py) and `assets`; tasks that need more (a tokenizer,
image arrays) say so where they bind the data.

- Data position: the checkpoint stores only the step. `train_iterator(start_step, ...)` must give
  exactly the batches an uninterrupted run gives from `start_step` on, so resume is exact without
  saving iterator state. Every source is a `StepPipeline`: the batch of step s is a pure function
  of (seed, s), so a resumed run reads nothing before step s (TFDS sources read their examples
  by index, see record_order.py).
- Per-host slicing: every batch a pipeline yields is this host's rows of the global batch,
  `host_slice(global_batch_size)`; the loop assembles the global array from them. Sources draw
  the global batch and each host reads or keeps only its rows (the data does not depend on the
  host count), except packed TFDS text, where each host packs its own sentences.
- Eval: `eval_batches` covers the eval (or validation) split once, in global batches that every
  host runs the same number of. The last batch is padded with repeats of the last example and
  `mask` marks the real rows (False = padding, to be left out of every mean); `index` numbers the
  examples, so per-example randomness can be a function of it.
"""

import abc
import dataclasses
import itertools
from typing import Iterator

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the task and model need to know about a dataset."""
    num_classes: int               # 0: real-valued regression targets, not class labels
    input_shape: tuple[int, ...]   # one example, no batch dimension
    num_train: int
    num_eval: int
    vocab_size: int = 0            # token inputs: ids are < vocab_size (0: inputs are not tokens)
    input_dtype: str = "float32"
    num_val: int = 0               # examples held out of the training data (0: no val split)
    # Regression targets: each output's mean and standard deviation over the training split; the
    # task trains on targets standardised with them and maps its predictions back, so that eval
    # metrics stay in the targets' units (stored in data_info.json for `fmjax eval`).
    target_mean: tuple[float, ...] = ()
    target_std: tuple[float, ...] = ()


def host_slice(global_size: int) -> slice:
    """The rows of a global batch of `global_size` that this host holds."""
    per_host = global_size // jax.process_count()
    start = jax.process_index() * per_host
    return slice(start, start + per_host)


def host_positions(step: int, global_size: int) -> np.ndarray:
    """Which examples of the run (counted from step 0) this host's rows of step `step`'s global
    batch hold: for sources that read example p of a fixed order (shuffled epochs)."""
    return step * global_size + np.arange(global_size)[host_slice(global_size)]


def local_batch_size(global_size: int) -> int:
    """How many rows of a global batch of `global_size` this host holds."""
    return len(range(global_size)[host_slice(global_size)])


class Pipeline(abc.ABC):
    """A data source ready to run: `info`, training batches from any step, padded eval batches
    (see the module docstring for what each promises)."""
    info: DataInfo

    @abc.abstractmethod
    def train_iterator(self, start_step: int, global_batch_size: int) -> Iterator[dict]:
        """This host's numpy batches for steps start_step, start_step + 1, ... (endless)."""

    @abc.abstractmethod
    def eval_examples(self, index: np.ndarray) -> dict:
        """The eval examples numbered `index` (each < info.num_eval), as a batch."""

    def val_examples(self, index: np.ndarray) -> dict:
        """The validation examples numbered `index` (each < info.num_val), as a batch; only
        sources that hold out a validation split (`info.num_val` > 0) have any."""
        raise NotImplementedError(f"{type(self).__name__} holds out no validation split")

    def eval_batches(self, global_batch_size: int, split: str = "eval") -> Iterator[dict]:
        """This host's rows of the eval split (`split="val"`: the validation split) in global
        batches, with `index` and `mask`."""
        n, examples = ((self.info.num_eval, self.eval_examples) if split == "eval" else
                       (self.info.num_val, self.val_examples))
        for first in range(0, n, global_batch_size):
            index = np.arange(first, first + global_batch_size)[host_slice(global_batch_size)]
            yield {**examples(np.minimum(index, n - 1)),
                   "index": index.astype(np.int32), "mask": index < n}

    def assets(self) -> dict[str, bytes]:
        """Files ({name: bytes}) the workdir must keep to read the data again, e.g. a tokenizer."""
        return {}


class StepPipeline(Pipeline):
    """A pipeline whose training batch of step s is a pure function of (seed, s)."""

    @abc.abstractmethod
    def train_batch(self, step: int, global_batch_size: int) -> dict:
        """This host's part of the global batch for optimizer step `step`."""

    def train_iterator(self, start_step: int, global_batch_size: int) -> Iterator[dict]:
        for step in itertools.count(start_step):
            yield self.train_batch(step, global_batch_size)
