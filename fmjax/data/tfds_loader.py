"""The one way fmjax reads TensorFlow Datasets: lazy import, `load` (a tf.data.Dataset, for splits
read once into memory) and `data_source` (random access by record index, for training streams).

Training batches are read by index (`data_source`, ArrayRecord files, see record_order.py), so a
resumed run reads only the records of the steps it runs. TensorFlow is imported only when a TFDS
source is used, so fmjax imports and trains without it.
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
         offline_hint: str = "", **options):
    """`tfds.load(name, split=split, **options)`, or one UserError line naming the dataset and
    split, and `offline_hint`."""
    _, tfds = import_tfds()
    try:
        return tfds.load(name, split=split, data_dir=data_dir or None, download=download,
                         **options)
    except Exception as e:  # tfds raises many types; the user needs the first line only
        hint = f" ({offline_hint})" if offline_hint else ""
        raise UserError(f"cannot load TFDS dataset '{name}' split '{split}': "
                        f"{first_line(e)}{hint}")


def require_features(names, name: str, features: tuple[str, ...],
                     hint: str = "config.data.text_key names the text feature") -> None:
    """UserError unless the dataset's feature `names` (`ds.element_spec`, `info.features`)
    include `features` (the text sources' first feature is `config.data.text_key`)."""
    missing = [f for f in features if f not in names]
    if missing:
        raise UserError(f"TFDS dataset '{name}' has no feature {', '.join(map(repr, missing))} "
                        f"(features: {', '.join(sorted(names))}; {hint})")


# What a user with a TFRecord copy of a dataset (TFDS's default format) can do about it.
ARRAY_RECORD_HINT = ("fmjax reads TFDS data by index from ArrayRecord files: prepare them with "
                     "config.data.download=True, or convert a TFRecord copy with `tfds "
                     "convert_format --dataset_dir=DIR --out_file_format=array_record`")


def data_source(name: str, split: str, features: tuple[str, ...], *, data_dir: str = "",
                download: bool = True, **hint):
    """`tfds.data_source`: `split` as a random-access sequence of decoded examples, read from
    ArrayRecord files (prepared in that format on first use with `download`), or one UserError,
    also when the examples lack one of `features` (`hint`: see `require_features`)."""
    _, tfds = import_tfds()
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=download,
                                  builder_kwargs={"file_format": "array_record"})
    except Exception as e:  # tfds raises many types; the user needs the first line only
        raise UserError(f"cannot load TFDS dataset '{name}' split '{split}': "
                        f"{first_line(e)} ({ARRAY_RECORD_HINT})")
    require_features(list(source.dataset_info.features.keys()), name, features, **hint)
    return source


def read(source, index) -> list:
    """The examples of `source` (a `data_source`) at record numbers `index`, in one batched read."""
    return source.__getitems__([int(i) for i in index])
