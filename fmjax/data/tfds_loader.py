"""The one way fmjax reads TensorFlow Datasets: lazy import, load, training stream.

TensorFlow is imported only when a TFDS source is used, so fmjax imports and trains without it.
"""

import os

from fmjax.errors import UserError, first_line


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


def load(name: str, split: str, *, data_dir: str = "", download: bool = True,
         this_host_only: bool = False, offline_hint: str = "", **options):
    """`tfds.load(name, split=split, **options)` (this host's shard of the split with
    `this_host_only`), or one UserError line naming the dataset and split, and `offline_hint`."""
    _, tfds = import_tfds()
    try:
        return tfds.load(name, split=tfds.split_for_jax_process(split) if this_host_only else split,
                         data_dir=data_dir or None, download=download, **options)
    except Exception as e:  # tfds raises many types; the user needs the first line only
        hint = f" ({offline_hint})" if offline_hint else ""
        raise UserError(f"cannot load TFDS dataset '{name}' split '{split}': "
                        f"{first_line(e)}{hint}")


def require_features(ds, name: str, features: tuple[str, ...]) -> None:
    """UserError unless every element of `ds` has `features` (the text sources' first feature
    is `config.data.text_key`)."""
    missing = [f for f in features if f not in ds.element_spec]
    if missing:
        raise UserError(f"TFDS dataset '{name}' has no feature {', '.join(map(repr, missing))} "
                        f"(features: {', '.join(sorted(ds.element_spec))}; "
                        "config.data.text_key names the text feature)")


def num_examples(info, split: str) -> int:
    """Examples in `split` as the dataset info records them (0 when it does not, e.g. under
    tfds.testing.mock_data)."""
    try:
        return info.splits[split].num_examples
    except KeyError:
        return 0


def training_stream(ds, *, shuffle_buffer: int, seed: int, batch_size: int, skip: int = 0):
    """`ds` shuffled by a seeded buffer (reshuffled every epoch), repeated, in batches of
    `batch_size`, the first `skip` batches dropped: the same stream every time it is built."""
    tf, _ = import_tfds()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size, drop_remainder=True).skip(skip)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(2)
