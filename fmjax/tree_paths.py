"""One spelling of a path in a tree of arrays, 'params/block_0/attention/query_kernel': what
freeze and pruning patterns match (fmjax/optim.py, fmjax/compression/pruning.py) and what
checkpoints name (fmjax/checkpoint.py)."""

import flax.linen as nn
import jax


def path_name(path) -> str:
    """'params/conv_0/kernel' for dict keys, dataclass fields and sequence indices alike."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def map_params(fn, params):
    """fn('a/b/c' path, unboxed array) at every parameter, boxed (logical axes) or not."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: fn(path_name(path), nn.unbox(x)), params,
        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
