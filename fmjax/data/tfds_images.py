"""Image classification from TensorFlow Datasets (mnist, fashion_mnist, cifar10, ...).

TensorFlow is imported only when this source is used, so fmjax imports and trains without it.
Training batches come from tf.data (this host's shard of the split, seeded shuffle, skipped to the
resume step); the eval split is read once into memory so every host runs the same number of
eval batches.
"""

import dataclasses
import functools

import jax
import numpy as np

from fmjax.data import tfds_loader
from fmjax.data.arrays import Arrays
from fmjax.data.augment import crop_and_flip
from fmjax.data.pipeline import DataInfo, Pipeline, local_batch_size
from fmjax.ranges import NonNegativeInt, PositiveInt


@dataclasses.dataclass
class TFDSImages:
    """config.data for `name='tfds'`."""
    dataset: str = "mnist"
    train_split: str = "train"
    eval_split: str = "test"
    data_dir: str = ""          # "" = TFDS's default (~/tensorflow_datasets)
    download: bool = True
    shuffle_buffer: PositiveInt = 10_000
    crop_padding: NonNegativeInt = 0
    flip: bool = False
    binarize: bool = False      # pixels > 0.5 -> 1, else 0 (Bernoulli likelihood models)

    def load(self, split: str, **options):
        """(image, label) pairs of `split`: a tf.data.Dataset (`options`: tfds_loader.load's)."""
        return tfds_loader.load(self.dataset, split, data_dir=self.data_dir,
                                download=self.download, as_supervised=True, **options)

    def scale(self, x_uint8: np.ndarray) -> np.ndarray:
        """uint8 pixels -> float32 in [0, 1] (or {0, 1} with `binarize`)."""
        x = x_uint8.astype(np.float32) / 255.0
        return (x > 0.5).astype(np.float32) if self.binarize else x

    def pipeline(self, seed: int, workdir=None) -> "TFDSPipeline":
        eval_ds, info = self.load(self.eval_split, with_info=True)
        x_eval, y_eval = _to_numpy(eval_ds)
        num_classes = info.features["label"].num_classes
        eval_arrays = Arrays(x_eval[:0], y_eval[:0], self.scale(x_eval), y_eval, num_classes)
        num_train = tfds_loader.num_examples(info, self.train_split)
        info = DataInfo(num_classes, x_eval.shape[1:], num_train, len(x_eval))
        return TFDSPipeline(self, eval_arrays, info, seed)


def _to_numpy(ds):
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.stack(images), np.asarray(labels, np.int32)


class TFDSPipeline(Pipeline):
    """Training batches streamed by tf.data from this host's files; the eval split in memory."""

    def __init__(self, source: TFDSImages, eval_arrays: Arrays, info: DataInfo, seed: int):
        self.source, self.eval_arrays, self.info, self.seed = source, eval_arrays, info, seed
        self.augment = crop_and_flip(source.crop_padding, source.flip)

    def train_iterator(self, start_step: int, global_batch_size: int):
        ds = tfds_loader.training_stream(
            self.source.load(self.source.train_split, this_host_only=True),
            shuffle_buffer=self.source.shuffle_buffer, seed=self.seed,
            batch_size=local_batch_size(global_batch_size), skip=start_step)
        for step, (x, y) in enumerate(ds.as_numpy_iterator(), start=start_step):
            x = self.source.scale(x)
            if self.augment is not None:   # each host reads its own files: its own draws
                rng = np.random.default_rng([self.seed, step, jax.process_index()])
                x = self.augment(x, rng, slice(None), len(x))
            yield {"inputs": x, "labels": y.astype(np.int32)}

    def eval_examples(self, index: np.ndarray) -> dict:
        return self.eval_arrays.eval_examples(index)

    def first_eval_inputs(self, n: int) -> np.ndarray:
        """The first `n` eval inputs, the same on every host (for image grids)."""
        return self.eval_arrays.x_eval[:n]

    @functools.cached_property
    def arrays(self) -> Arrays:
        """Both splits in host memory, read on first use: for what needs the whole training set
        at once (the feature-distance classifier of generative tasks), not for training."""
        x_train, y_train = _to_numpy(self.source.load(self.source.train_split))
        held = self.eval_arrays
        return Arrays(self.source.scale(x_train), y_train, held.x_eval, held.y_eval,
                      held.num_classes)
