"""Image classification from TensorFlow Datasets (mnist, fashion_mnist, cifar10, ...).

TensorFlow is imported only when this source is used, so fmjax imports and trains without it.
Training batches come from tf.data (this host's shard of the split, seeded shuffle, skipped to the
resume step); the eval split is read once into memory so every host runs the same number of
eval batches.
"""

import dataclasses
import functools
import os

import numpy as np

from fmjax.data.augment import crop_and_flip
from fmjax.data.pipeline import Arrays, ArrayPipeline, DataInfo, _host_slice
from fmjax.errors import UserError, first_line
from fmjax.ranges import NonNegativeInt, PositiveInt


def import_tfds():
    """(tf, tfds), or a UserError that says how to install them."""
    # Keep TF's C++ start-up lines off stderr (errors must stay one line): the log level for older
    # TF, and for TF >= 2.20 the oneDNN notice, which tf.data's input ops never needed.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UserError(f"TFDS datasets need TensorFlow ({e}); pip install 'fmjax[tfds]'") from e
    tf.config.set_visible_devices([], "GPU")   # keep tf.data off the accelerators JAX uses
    return tf, tfds


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

    def _load(self, split: str):
        tf, tfds = import_tfds()
        try:
            ds, info = tfds.load(self.dataset, split=split, as_supervised=True, with_info=True,
                                 data_dir=self.data_dir or None, download=self.download)
        except Exception as e:  # tfds raises many types; the user needs the first line only
            reason = first_line(e)
            raise UserError(f"cannot load TFDS dataset '{self.dataset}' split '{split}': {reason}")
        return tf, tfds, ds, info

    def scale(self, x_uint8: np.ndarray) -> np.ndarray:
        """uint8 pixels -> float32 in [0, 1] (or {0, 1} with `binarize`)."""
        x = x_uint8.astype(np.float32) / 255.0
        return (x > 0.5).astype(np.float32) if self.binarize else x

    def pipeline(self, seed: int, workdir=None) -> "TFDSPipeline":
        _, _, eval_ds, info = self._load(self.eval_split)
        x_eval, y_eval = _to_numpy(eval_ds)
        x_eval = self.scale(x_eval)
        num_classes = info.features["label"].num_classes
        arrays = Arrays(x_eval[:0], y_eval[:0], x_eval, y_eval, num_classes)
        try:
            num_train = info.splits[self.train_split].num_examples
        except KeyError:   # not recorded (e.g. under tfds.testing.mock_data)
            num_train = 0
        return TFDSPipeline(self, ArrayPipeline(arrays, seed),
                            DataInfo(num_classes, x_eval.shape[1:], num_train, len(x_eval)), seed)


def _to_numpy(ds):
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.stack(images), np.asarray(labels, np.int32)


class TFDSPipeline:
    """Same interface as ArrayPipeline: `info`, `train_iterator`, `eval_batches`."""

    def __init__(self, source: TFDSImages, eval_pipeline: ArrayPipeline, info: DataInfo,
                 seed: int):
        self.source, self.eval_pipeline, self.info, self.seed = source, eval_pipeline, info, seed
        self.augment = crop_and_flip(source.crop_padding, source.flip)

    def train_iterator(self, start_step: int, global_batch_size: int):
        import jax

        tf, tfds = import_tfds()
        _, _, ds, _ = self.source._load(tfds.split_for_jax_process(self.source.train_split))
        local_batch = len(range(global_batch_size)[_host_slice(global_batch_size)])
        ds = ds.shuffle(self.source.shuffle_buffer, seed=self.seed, reshuffle_each_iteration=True)
        ds = ds.repeat().batch(local_batch, drop_remainder=True).skip(start_step)
        options = tf.data.Options()
        options.deterministic = True
        ds = ds.with_options(options).prefetch(2)
        for step, (x, y) in enumerate(ds.as_numpy_iterator(), start=start_step):
            x = self.source.scale(x)
            if self.augment is not None:   # each host reads its own files: its own draws
                rng = np.random.default_rng([self.seed, step, jax.process_index()])
                x = self.augment(x, rng, slice(None), len(x))
            yield {"inputs": x, "labels": y.astype(np.int32)}

    def eval_batches(self, global_batch_size: int):
        return self.eval_pipeline.eval_batches(global_batch_size)

    def first_eval_inputs(self, n: int) -> np.ndarray:
        return self.eval_pipeline.first_eval_inputs(n)

    @functools.cached_property
    def arrays(self) -> Arrays:
        """Both splits in host memory, read on first use: for what needs the whole training set
        at once (the feature-distance classifier of generative tasks), not for training."""
        _, _, train_ds, _ = self.source._load(self.source.train_split)
        x_train, y_train = _to_numpy(train_ds)
        held = self.eval_pipeline.arrays
        return Arrays(self.source.scale(x_train), y_train, held.x_eval, held.y_eval,
                      held.num_classes)

    def assets(self) -> dict[str, bytes]:
        return {}
