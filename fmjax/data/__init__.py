"""Dataset registry: `config.data.name` -> a dataclass whose fields are the other data keys.

Each source's `pipeline(seed, workdir)` returns a `Pipeline` (fmjax/data/pipeline.py: the
interface, what resume, per-host slicing and eval padding mean).
"""

from fmjax.data.diabetes import Diabetes
from fmjax.data.digits import Digits
from fmjax.data.mnist1d import MNIST1D
from fmjax.data.pipeline import DataInfo, Pipeline
from fmjax.data.synthetic import SyntheticTokens
from fmjax.data.text import Text
from fmjax.data.text_classification import TextClassification
from fmjax.data.tfds_images import TFDSImages
from fmjax.data.tfds_text import TFDSText
from fmjax.data.translation import SyntheticTranslation, Translation

SOURCES = {
    "mnist1d": MNIST1D,
    "digits": Digits,
    "diabetes": Diabetes,
    "tfds": TFDSImages,
    "text": Text,
    "text_classification": TextClassification,
    "tfds_text": TFDSText,
    "synthetic_tokens": SyntheticTokens,
    "translation": Translation,
    "synthetic_translation": SyntheticTranslation,
}


def build_pipeline(data_config, seed: int, workdir=None) -> Pipeline:
    """Instantiate `config.data` and return its pipeline (sources with a tokenizer reuse the one
    stored in `workdir`)."""
    kwargs = {k: v for k, v in data_config.items() if k != "name"}
    return SOURCES[data_config.name](**kwargs).pipeline(seed, workdir)
