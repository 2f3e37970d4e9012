"""Dataset registry: `config.data.name` -> a dataclass whose fields are the other data keys.

Each source's `pipeline(seed)` returns an object with `info` (DataInfo), `train_iterator(start_step,
global_batch_size)` yielding this host's numpy batches, and `eval_batches(global_batch_size)`.
"""

from fmjax.data.digits import Digits
from fmjax.data.mnist1d import MNIST1D
from fmjax.data.pipeline import DataInfo
from fmjax.data.tfds_images import TFDSImages

SOURCES = {
    "mnist1d": MNIST1D,
    "digits": Digits,
    "tfds": TFDSImages,
}


def build_pipeline(data_config, seed: int):
    """Instantiate `config.data` and return its pipeline."""
    kwargs = {k: v for k, v in data_config.items() if k != "name"}
    return SOURCES[data_config.name](**kwargs).pipeline(seed)
