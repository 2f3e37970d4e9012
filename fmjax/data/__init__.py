"""Dataset registry: `config.data.name` -> a dataclass whose fields are the other data keys.

Each source's `pipeline(seed, workdir)` returns an object with `info` (DataInfo),
`train_iterator(start_step, global_batch_size)` yielding this host's numpy batches,
`eval_batches(global_batch_size)`, and `assets()`: files ({name: bytes}) the workdir must keep,
such as a tokenizer.
"""

from fmjax.data.digits import Digits
from fmjax.data.mnist1d import MNIST1D
from fmjax.data.pipeline import DataInfo
from fmjax.data.synthetic import SyntheticTokens
from fmjax.data.text import Text
from fmjax.data.text_classification import TextClassification
from fmjax.data.tfds_images import TFDSImages
from fmjax.data.tfds_text import TFDSText
from fmjax.data.translation import SyntheticTranslation, Translation

SOURCES = {
    "mnist1d": MNIST1D,
    "digits": Digits,
    "tfds": TFDSImages,
    "text": Text,
    "text_classification": TextClassification,
    "tfds_text": TFDSText,
    "synthetic_tokens": SyntheticTokens,
    "translation": Translation,
    "synthetic_translation": SyntheticTranslation,
}


def build_pipeline(data_config, seed: int, workdir=None):
    """Instantiate `config.data` and return its pipeline (sources with a tokenizer reuse the one
    stored in `workdir`)."""
    kwargs = {k: v for k, v in data_config.items() if k != "name"}
    return SOURCES[data_config.name](**kwargs).pipeline(seed, workdir)
