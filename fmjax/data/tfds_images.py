"""Image classification from TensorFlow Datasets (mnist, fashion_mnist, cifar10, ...).

TensorFlow is imported only when this source is used, so fmjax imports and trains without it.
Training examples are read by index from the split's ArrayRecord files (`tfds.data_source`): the
batch of step s holds the examples at positions s * batch .. (s + 1) * batch - 1 of seeded
per-epoch permutations (record_order.py), and each host reads only its rows of it. So the batch of
a step is a pure function of (seed, step), the same on 1 host or N, and a resumed run reads
only the records of the steps it runs. The eval split is read once into memory so every host runs
the same number of eval batches.

`validation_fraction` holds out records of the training split by index: a permutation seeded by
`validation_seed` picks them (not stratified: that would decode every training label first); they
are read into memory like the eval split, and training positions map onto the rest.
"""

import dataclasses
import functools

import numpy as np

from fmjax.data import tfds_loader, validation
from fmjax.data.arrays import Arrays
from fmjax.data.augment import Degrees, image_augmentation
from fmjax.data.pipeline import DataInfo, StepPipeline, host_positions, host_slice
from fmjax.data.record_order import RecordOrder
from fmjax.ranges import Fraction, NonNegativeInt, Seed


@dataclasses.dataclass
class TFDSImages:
    """config.data for `name='tfds'`."""
    dataset: str = "mnist"
    train_split: str = "train"
    eval_split: str = "test"
    data_dir: str = ""          # "" = TFDS's default (~/tensorflow_datasets)
    download: bool = True
    crop_padding: NonNegativeInt = 0
    flip: bool = False
    rotate_degrees: Degrees = 0.0   # random rotation in [-d, d] degrees (0 = off)
    binarize: bool = False      # pixels > 0.5 -> 1, else 0 (Bernoulli likelihood models)
    # Of the training records, held out as the validation split (val/*), chosen by
    # validation_seed; 0 keeps the whole training split, as the published protocols do.
    validation_fraction: Fraction = 0.0
    validation_seed: Seed = 0

    @property
    def eval_is_validation(self) -> bool:
        """Model selection may read eval/* when the eval split is a validation split."""
        return validation.names_validation_split(self.eval_split)

    def data_source(self, split: str):
        """`split` as a random-access sequence of {"image", "label", ...} examples."""
        return tfds_loader.data_source(self.dataset, split, ("image", "label"),
                                       data_dir=self.data_dir, download=self.download,
                                       hint="an image classification dataset")

    def scale(self, x_uint8: np.ndarray) -> np.ndarray:
        """uint8 pixels -> float32 in [0, 1] (or {0, 1} with `binarize`)."""
        x = x_uint8.astype(np.float32) / 255.0
        return (x > 0.5).astype(np.float32) if self.binarize else x

    def pipeline(self, seed: int, workdir=None) -> "TFDSPipeline":
        train, eval_source = self.data_source(self.train_split), self.data_source(self.eval_split)
        x_eval, y_eval = _to_numpy(tfds_loader.read(eval_source, range(len(eval_source))))
        num_classes = eval_source.dataset_info.features["label"].num_classes
        train_index, val_index = validation.holdout_index(
            None, len(train), self.validation_fraction, self.validation_seed)
        x_val, y_val = (_to_numpy(tfds_loader.read(train, val_index)) if len(val_index) else
                        (x_eval[:0], y_eval[:0]))
        eval_arrays = Arrays(x_eval[:0], y_eval[:0], self.scale(x_eval), y_eval, num_classes,
                             self.scale(x_val), y_val)
        info = DataInfo(num_classes, x_eval.shape[1:], len(train_index), len(x_eval),
                        num_val=len(val_index))
        return TFDSPipeline(self, train, train_index, eval_arrays, info, seed)


def _to_numpy(examples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(images, int32 labels) of decoded examples."""
    return (np.stack([ex["image"] for ex in examples]),
            np.array([ex["label"] for ex in examples], np.int32))


class TFDSPipeline(StepPipeline):
    """Training batches read by index from the ArrayRecord files (the records `train_index`
    lists); the eval and validation splits in memory (`eval_arrays`)."""

    def __init__(self, source: TFDSImages, train, train_index: np.ndarray, eval_arrays: Arrays,
                 info: DataInfo, seed: int):
        self.source, self.train, self.eval_arrays, self.info = source, train, eval_arrays, info
        self.train_index = train_index
        self.seed, self.order = seed, RecordOrder(len(train_index), seed)
        self.augment = image_augmentation(source.crop_padding, source.flip,
                                          source.rotate_degrees)

    def train_batch(self, step: int, global_batch_size: int) -> dict:
        positions = host_positions(step, global_batch_size)
        x, y = _to_numpy(tfds_loader.read(self.train, self.train_index[self.order[positions]]))
        x = self.source.scale(x)
        if self.augment is not None:   # the same draws on every host: see data/augment.py
            rng = np.random.default_rng([self.seed, step, 1])
            x = self.augment(x, rng, host_slice(global_batch_size), global_batch_size)
        return {"inputs": x, "labels": y}

    def eval_examples(self, index: np.ndarray) -> dict:
        return self.eval_arrays.eval_examples(index)

    def val_examples(self, index: np.ndarray) -> dict:
        return self.eval_arrays.val_examples(index)

    def first_eval_inputs(self, n: int) -> np.ndarray:
        """The first `n` eval inputs, the same on every host (for image grids)."""
        return self.eval_arrays.x_eval[:n]

    @functools.cached_property
    def arrays(self) -> Arrays:
        """Both splits in host memory, read on first use: for what needs the whole training set
        at once (the feature-distance classifier of generative tasks), not for training."""
        x_train, y_train = _to_numpy(tfds_loader.read(self.train, self.train_index))
        return dataclasses.replace(self.eval_arrays, x_train=self.source.scale(x_train),
                                   y_train=y_train)
