"""Which config keys vectorised sweep members may differ in, and each member's config.

Kept apart from fmjax/sweep/vectorized.py (the in-process loop) so that the sweep process can
check a `--vectorize` sweep without importing the train loop.
"""

import copy

import ml_collections

from fmjax import configs, optim

VECTORIZABLE_KEYS = ("train.seed",) + tuple(f"optimizer.{name}" for name in optim.INJECTABLE)


def is_vectorizable(key: str) -> bool:
    """Whether members may differ in config key `key` ("optimizer.learning_rate") and still be
    trained in the same train call."""
    return key in VECTORIZABLE_KEYS


def member_config(config: ml_collections.ConfigDict, member: dict) -> ml_collections.ConfigDict:
    """A copy of `config` with the member's values at its dotted keys."""
    out = copy.deepcopy(config)
    for key, value in member.items():
        section, name = key.rsplit(".", 1)
        configs.value_at(out, section)[name] = value
    return out
