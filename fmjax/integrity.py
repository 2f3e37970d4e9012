"""Checksums of a train state's arrays: written with every checkpoint, verified on every restore.

Orbax and TensorStore read back whatever bytes are on disk: 4 KB of garbage inside an OCDBT data
file gives other numbers, not an error. So each checkpoint stores a 64-bit checksum per array,
and a restore recomputes them from what it read.

A checksum is computed where the array lives, by one jitted reduction: each element's bits are
hashed together with the element's position in the whole array, and the hashes are summed as
wrapping uint32 (twice, with two seeds, for 64 bits). Integer sums do not depend on the order of
addition, so the checksum is the same whatever the mesh, the sharding or the number of hosts: a
checkpoint written on 8 devices verifies when restored onto 1, and nothing is gathered onto one
host to compute it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

_SEEDS = (0x9E3779B9, 0x7F4A7C15)   # one per 32-bit lane


def _fmix32(h):
    """MurmurHash3's finaliser: every input bit flips about half of the output bits."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The array's bits as uint32 words (64-bit elements give two words each)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = np.dtype(x.dtype).itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size < 4:
        unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
        return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(x, jnp.uint32)   # [..., itemsize // 4]


def _array_checksum(x: jax.Array) -> jax.Array:
    """uint32[2]: the two lanes of one array's checksum."""
    words = _words(x)
    index = jnp.zeros(words.shape, jnp.uint32)   # the element's row-major position, mod 2**32
    stride = 1
    for dim in reversed(range(words.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, words.shape, dim) * jnp.uint32(
            stride % 2**32)
        stride *= words.shape[dim]
    return jnp.stack([jnp.sum(_fmix32(words ^ _fmix32(index ^ jnp.uint32(seed))),
                              dtype=jnp.uint32) for seed in _SEEDS])


@functools.partial(jax.jit, out_shardings=None)
def _tree_checksums(tree):
    return jax.tree.map(_array_checksum, tree)


def checksums(tree, path_name) -> dict[str, str]:
    """{path_name(path): 16 hex digits} for every array of `tree` (computed on its devices)."""
    lanes = _tree_checksums(tree)
    flat = jax.tree_util.tree_flatten_with_path(lanes)[0]
    # Replicated results: every process holds the whole (tiny) value, even on several hosts.
    return {path_name(path): "".join(f"{int(w):08x}" for w in np.asarray(x.addressable_data(0)))
            for path, x in flat}


def first_mismatch(tree, expected: dict[str, str], path_name) -> str | None:
    """The path of the first array of `tree` whose checksum differs from `expected` (or that
    `expected` lacks); None when all match."""
    for name, value in checksums(tree, path_name).items():
        if expected.get(name) != value:
            return name
    return None
