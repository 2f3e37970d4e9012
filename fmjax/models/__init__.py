"""Model registry: `config.model.name` -> a pure `flax.linen` module class.

Every other key of `config.model` must be a field of that class; `num_classes` (or the family's
equivalent) comes from the dataset.
"""

from fmjax.errors import UserError, first_line
from fmjax.models.bert import BERT
from fmjax.models.cnn import CNN1D, CNN2D
from fmjax.models.dcgan import DCGAN
from fmjax.models.gpt import GPT
from fmjax.models.gru import GRUClassifier
from fmjax.models.lstm import LSTMClassifier
from fmjax.models.mlp import MLP, LogisticRegression
from fmjax.models.resnet import ResNet
from fmjax.models.seq2seq import EncoderDecoder
from fmjax.models.vae import VAE
from fmjax.models.vit import ViT

MODELS = {
    "logreg": LogisticRegression,
    "mlp": MLP,
    "cnn1d": CNN1D,
    "cnn2d": CNN2D,
    "gru": GRUClassifier,
    "lstm": LSTMClassifier,
    "resnet": ResNet,
    "gpt": GPT,
    "vae": VAE,
    "dcgan": DCGAN,
    "vit": ViT,
    "bert": BERT,
    "seq2seq": EncoderDecoder,
}


def build_model(model_config, **from_data):
    """Instantiate `config.model` (dtype given as a string) with dataset-derived fields."""
    import jax.numpy as jnp

    kwargs = {k: v for k, v in model_config.items() if k != "name"}
    kwargs["dtype"] = jnp.dtype(kwargs.get("dtype", "float32"))
    kwargs.update(from_data)
    try:
        return MODELS[model_config.name](**kwargs)
    except TypeError as e:   # e.g. a feature model given a token dataset's vocab_size
        raise UserError(f"model '{model_config.name}' does not fit this task and dataset: "
                        f"{first_line(e)}") from e
