"""fmjax: a JAX research framework for foundation models.

One sharded train step (`fmjax.train.train_and_evaluate`) serves every model family; what differs
between families lives in `fmjax.tasks`, models in `fmjax.models`, data in `fmjax.data`.
"""

__version__ = "0.1.0"
