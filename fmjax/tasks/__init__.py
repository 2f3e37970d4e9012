"""Task registry: `config.task` -> the class that owns loss, metrics and eval for a family."""

from fmjax.tasks.base import Task
from fmjax.tasks.classification import Classification
from fmjax.tasks.gan import GAN
from fmjax.tasks.lm import LanguageModel
from fmjax.tasks.mlm import MaskedLanguageModel
from fmjax.tasks.regression import Regression
from fmjax.tasks.translation import Translation
from fmjax.tasks.vae import VAE

TASKS = {"classification": Classification, "lm": LanguageModel, "vae": VAE, "gan": GAN,
         "mlm": MaskedLanguageModel, "translation": Translation, "regression": Regression}


def build_task(config, info) -> Task:
    return TASKS[config.task](config, info)
