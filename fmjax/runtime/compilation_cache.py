"""JAX's persistent compilation cache, on for the `fmjax` command: a run that compiles what an
earlier run on this machine compiled loads the executable instead (the MNIST-1D CNN's whole
`fmjax train`, 2-core AVX-512 EPYC, median of 6: 6.7 -> 5.4 CPU s, 5.1 -> 4.4 s wall). The loaded
executable is the compiled one: the metrics are equal bit for bit (tests/test_compilation_cache.py).

Turn it off with JAX_ENABLE_COMPILATION_CACHE=false; a JAX_COMPILATION_CACHE_DIR or
JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS of your own is kept. The folder may be deleted at any
time (it has no size limit: JAX's limit needs the `filelock` package)."""

import hashlib
import os
import pathlib

import jax

from fmjax.runtime import cache, machine


def folder() -> pathlib.Path:
    """One folder per CPU: JAX's cache key names the platform ("cpu") but not the instruction
    set, and code compiled for AVX-512 must not load on an AVX2 machine sharing the home folder."""
    cpu = hashlib.sha256(machine.cpu_identity().encode()).hexdigest()[:12]
    return cache.cache_dir() / "jax-compilation-cache" / cpu


def enable() -> None:
    """Store every compiled program (JAX's default: only those that took over 1 s; the CNN's
    take 0.1-0.9 s) under `folder()`, unless the environment chose otherwise."""
    if not jax.config.jax_compilation_cache_dir:   # unset, or set to ""
        jax.config.update("jax_compilation_cache_dir", str(folder()))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
