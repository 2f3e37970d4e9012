"""One spelling of a path in a tree of arrays, 'params/block_0/attention/query_kernel': what
freeze, pruning and re-initialisation patterns match (fmjax/optim.py,
fmjax/compression/pruning.py, fmjax/checkpoint.py) and what checkpoints name."""

import re
from typing import Sequence

import flax.linen as nn
import jax

from fmjax.errors import UserError


def path_name(path) -> str:
    """'params/conv_0/kernel' for dict keys, dataclass fields and sequence indices alike."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def map_params(fn, params):
    """fn('a/b/c' path, unboxed array) at every parameter, boxed (logical axes) or not."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: fn(path_name(path), nn.unbox(x)), params,
        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def check_patterns(key: str, patterns: Sequence[str]) -> None:
    """UserError naming config `key` for the first of `patterns` that is not a regex."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise UserError(f"config.{key}: bad regular expression {pattern!r}: {e}")


def check_each_matches(key: str, patterns: Sequence[str], paths: Sequence[str]) -> None:
    """UserError for the first of `patterns` (config `key`) that matches none of `paths`: a
    misspelt pattern would otherwise do nothing, silently."""
    for pattern in patterns:
        if not any(re.search(pattern, p) for p in paths):
            raise UserError(f"config.{key}: {pattern!r} matches no parameter "
                            f"(parameters look like {paths[0]!r})")
