"""How many bytes a parameter tree takes: as fmjax's checkpoints store it, and raw.

Orbax writes arrays zstd-compressed into OCDBT data files (`.../d/*`), so zeros left by pruning
shrink as stored although the arrays stay dense; int8 and (packed) int4 weights shrink with them.
The stored figure is the size of those data files when the tree alone is saved with Orbax."""

import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_FOUR_BIT = (jnp.int4, jnp.uint4)


def stored_bytes(params) -> int:
    """Bytes of the OCDBT data files Orbax writes for `params` (saved to a temporary directory;
    every process writes its own shards there, process 0's total is returned)."""
    with tempfile.TemporaryDirectory(prefix="fmjax-bytes-") as tmp:
        path = pathlib.Path(tmp) / "params"
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(path, params)
            checkpointer.wait_until_finished()
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()
                   and f.parent.name == "d")


def raw_bytes(params) -> int:
    """Element count x element size over the tree, an int4 element counting half a byte."""
    bits = sum(x.size * (4 if x.dtype in _FOUR_BIT else 8 * np.dtype(x.dtype).itemsize)
               for x in jax.tree.leaves(params))
    return bits // 8
