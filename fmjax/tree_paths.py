"""One spelling of a path in a tree of arrays, 'params/block_0/attention/query_kernel': what
freeze patterns match (fmjax/optim.py) and what checkpoints name (fmjax/checkpoint.py)."""

import jax


def path_name(path) -> str:
    """'params/conv_0/kernel' for dict keys, dataclass fields and sequence indices alike."""
    return jax.tree_util.keystr(path, simple=True, separator="/")
