"""The CPU a measurement ran on, for result files (benchmarks/RESULTS.md, compression.json)."""

import platform


def cpu_name():
    """platform.processor() is often empty on Linux; /proc/cpuinfo names the CPU model."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The vector/matrix extensions XLA's CPU code generation uses: the same code ran 1.65x or 0.97x
# PyTorch's speed on machines that differed in these.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    """The SPEED_FLAGS this CPU has, from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                found = [f for f in SPEED_FLAGS if f in have]
                return " ".join(found) if found else "none of " + " ".join(SPEED_FLAGS)
    except OSError:
        pass
    return "unknown"
