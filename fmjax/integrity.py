"""Checksums of a train state's arrays: written with every checkpoint, verified on every restore.

Orbax and TensorStore read back whatever bytes are on disk: 4 KB of garbage inside an OCDBT data
file can give other numbers, not an error. So each checkpoint stores a 64-bit checksum per array,
and a restore recomputes them from what it read.

Each element's bits are hashed together with the element's position in the whole array, and the
hashes are summed as wrapping uint32 (twice, with two seeds, for 64 bits). Integer sums do not
depend on the order of addition, so the checksum is the same whatever the mesh, the sharding or
the number of hosts: a checkpoint written on 8 devices verifies when restored onto 1, and no
array is ever gathered onto one host. Large states are hashed where they live, by one jitted
reduction; small ones on the host, shard by shard, which needs no compilation (a jitted checksum
costs a few hundred milliseconds to compile, more than a small run's whole checkpointing). Both
ways give the same numbers (`tests/test_integrity.py`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from fmjax.tree_paths import path_name

_SEEDS = (0x9E3779B9, 0x7F4A7C15)   # one per 32-bit lane
_ON_DEVICE_MIN_ELEMENTS = 2**21     # smaller states are hashed on the host (< 0.2 s)


def _fmix32(h, xp):
    """MurmurHash3's finaliser (uint32, wrapping): each input bit flips about half the output."""
    h = h ^ (h >> 16)
    h = h * xp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * xp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _lanes(words, index, xp):
    """uint32[2]: the two lane sums over elements with bits `words` at positions `index`."""
    return xp.stack([xp.sum(_fmix32(words ^ _fmix32(index ^ xp.uint32(seed), xp), xp),
                            dtype=xp.uint32) for seed in _SEEDS])


def _words(x, xp):
    """The array's bits as uint32 words (64-bit elements give a trailing axis of two words)."""
    size = np.dtype(x.dtype).itemsize
    if x.dtype == bool:
        return x.astype(xp.uint32)
    if xp is np:
        words = x.view({1: np.uint8, 2: np.uint16}.get(size, np.uint32))
        return (words.astype(np.uint32) if size < 4 else
                words.reshape(*x.shape, size // 4) if size == 8 else words)
    if size < 4:
        unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
        return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _strides(shape) -> list[int]:
    """Row-major strides (in elements, mod 2**32) of an array of `shape`."""
    return [math.prod(shape[d + 1:]) % 2**32 for d in range(len(shape))]


# ---- On the devices: one jitted reduction for the whole tree. ------------------------------------

def _device_lanes(x):
    words = _words(x, jnp)
    index = jnp.zeros(words.shape, jnp.uint32)
    for dim, stride in enumerate(_strides(words.shape)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, words.shape, dim) * jnp.uint32(
            stride)
    return _lanes(words, index, jnp)


@jax.jit
def _device_checksums(leaves):
    return [_device_lanes(x) for x in leaves]


def _on_device(leaves) -> list[np.ndarray]:
    # Replicated results: every process holds the whole (tiny) value, even on several hosts.
    return [np.asarray(x.addressable_data(0)) for x in _device_checksums(leaves)]


# ---- On the host: each process hashes the shards it holds. ---------------------------------------

def _shard_lanes(data: np.ndarray, index: tuple, global_shape: tuple) -> np.ndarray:
    """The lane sums of one shard at `index` (slices into the global array)."""
    words = _words(data, np)
    starts = [s.start or 0 for s in index] + [0] * (words.ndim - len(index))
    global_words = (*global_shape, *words.shape[len(global_shape):])
    position = np.zeros(words.shape, np.uint32)
    for dim, stride in enumerate(_strides(global_words)):
        axis = (np.arange(words.shape[dim], dtype=np.uint64) + starts[dim]) * stride % 2**32
        position = position + axis.astype(np.uint32).reshape(
            [-1 if d == dim else 1 for d in range(words.ndim)])
    return _lanes(words.reshape(-1), position.reshape(-1), np)   # 1-d: numpy scalars warn on wrap


def _on_host(leaves) -> list[np.ndarray]:
    local = np.zeros((len(leaves), 2), np.uint32)
    for i, x in enumerate(leaves):
        for shard in x.addressable_shards:
            if shard.replica_id == 0:   # each element once, on one process
                local[i] += _shard_lanes(np.asarray(shard.data), shard.index, x.shape)
    if jax.process_count() > 1:
        local = np.sum(multihost_utils.process_allgather(local), axis=0, dtype=np.uint32)
    return list(local)


def checksums(tree) -> dict[str, str]:
    """{path_name(path): 16 hex digits} for every array of `tree` (jax.Arrays)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not flat:
        return {}
    paths, leaves = zip(*flat)
    leaves = [jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
              else x for x in leaves]
    on_device = sum(x.size for x in leaves) >= _ON_DEVICE_MIN_ELEMENTS
    lanes = _on_device(leaves) if on_device else _on_host(leaves)
    return {path_name(p): "".join(f"{int(w):08x}" for w in lane)
            for p, lane in zip(paths, lanes)}


def first_mismatch(tree, expected: dict[str, str]) -> str | None:
    """The path of the first array of `tree` whose checksum differs from `expected` (or that
    `expected` lacks); None when all match."""
    for name, value in checksums(tree).items():
        if expected.get(name) != value:
            return name
    return None
