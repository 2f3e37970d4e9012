"""Runs a Python module as if on an AVX2-only CPU: XLA's code generation and its YNNPACK dots.

`--xla_cpu_max_isa=AVX2` caps the code XLA generates, but the dots XLA hands to YNNPACK pick their
kernels from YNNPACK's own CPUID probe (`ynn::get_supported_arch_flags`, a function-local static),
and ran `dot_fp32_..._avx512` with the flag set (seen with `perf record`). This wrapper fills that
static with SSE2..AVX2+FMA3 (bits 0-6 of `ynn::arch_flag`, no AVX-512 or AMX bits) before any
dot runs, and sets its guard, so YNNPACK takes its `fma3`/`avx2` kernels.

    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python benchmarks/avx2_only.py -m fmjax train ...
"""

import ctypes
import pathlib
import runpy
import subprocess
import sys

import jaxlib

AVX2_FMA3_FLAGS = (1 << 7) - 1   # sse2 ssse3 sse41 avx f16c avx2 fma3 in ynnpack/base/arch.h
FLAGS = "_ZZN3ynn24get_supported_arch_flagsEvE5flags"
GUARD = "_ZGVZN3ynn24get_supported_arch_flagsEvE5flags"


def cap_ynnpack():
    """Presets YNNPACK's CPU-feature static in the loaded libjax_common.so to AVX2+FMA3."""
    import jax._src.xla_bridge  # noqa: F401  (loads libjax_common.so)
    lib = pathlib.Path(jaxlib.__file__).parent / "libjax_common.so"
    offsets = {}
    for line in subprocess.run(["nm", str(lib)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in (FLAGS, GUARD):
            offsets[parts[2]] = int(parts[0], 16)
    base = next(int(line.split("-")[0], 16) for line in open("/proc/self/maps")
                if line.rstrip().endswith(str(lib.resolve())) and line.split()[2] == "00000000")
    ctypes.c_uint64.from_address(base + offsets[FLAGS]).value = AVX2_FMA3_FLAGS
    ctypes.c_uint64.from_address(base + offsets[GUARD]).value = 1


if __name__ == "__main__":
    if sys.argv[1:2] != ["-m"] or len(sys.argv) < 3:
        sys.exit("usage: python benchmarks/avx2_only.py -m MODULE [ARGS...]")
    cap_ynnpack()
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
