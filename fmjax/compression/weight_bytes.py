"""How many bytes a parameter tree takes: in the dtypes its arrays are stored in (`array_bytes`:
float32 4, int8 1, int4 half a byte, scales included), and as fmjax's checkpoints write it to
disk (`checkpoint_bytes`).

Orbax writes arrays zstd-compressed into OCDBT data files (`.../d/*`), so zeros left by pruning
shrink as stored although the arrays stay dense; int8 and (packed) int4 weights shrink with them.
The checkpoint figure is the size of those data files when the tree alone is saved with Orbax (the
per-process `ocdbt.process_*/d/*`; they also hold a few hundred bytes of B-tree nodes, whose size
varies from save to save: concurrent writes pack the arrays into one data file or several,
compressed apart, e.g. 20,810 to 21,704 bytes for the MNIST-1D CNN's 20,840 raw bytes)."""

import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_FOUR_BIT = (jnp.int4, jnp.uint4)
SAVES = 3


def checkpoint_bytes(params, saves: int = SAVES) -> int:
    """Bytes of the OCDBT data files Orbax writes for `params`: the fewest of `saves` saves to
    a temporary directory (the tightest packing; each process writes its own shards there and
    process 0's are counted)."""
    return min(_saved_size(params) for _ in range(saves))


def _saved_size(params) -> int:
    with tempfile.TemporaryDirectory(prefix="fmjax-bytes-") as tmp:
        path = pathlib.Path(tmp) / "params"
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(path, params)
            checkpointer.wait_until_finished()
        return sum(f.stat().st_size for f in path.glob("ocdbt.process_*/d/*"))


def array_bytes(params) -> int:
    """Element count x element size over the tree, an int4 element counting half a byte."""
    bits = sum(x.size * (4 if x.dtype in _FOUR_BIT else 8 * np.dtype(x.dtype).itemsize)
               for x in jax.tree.leaves(params))
    return bits // 8
