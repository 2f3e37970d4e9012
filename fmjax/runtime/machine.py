"""The CPU a measurement ran on, for result files (benchmarks/RESULTS.md, compression.json)."""

import platform


def _cpuinfo(field: str) -> str | None:
    """The value of `field` for the first CPU in /proc/cpuinfo; None where there is none."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name():
    """platform.processor() is often empty on Linux; /proc/cpuinfo names the CPU model."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# The vector/matrix extensions XLA's CPU code generation uses: the same code ran 1.65x or 0.97x
# PyTorch's speed on machines that differed in these.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    """The SPEED_FLAGS this CPU has, from /proc/cpuinfo ("unknown" elsewhere)."""
    flags = _cpuinfo("flags")
    if flags is None:
        return "unknown"
    found = [f for f in SPEED_FLAGS if f in flags.split()]
    return " ".join(found) if found else "none of " + " ".join(SPEED_FLAGS)


def cpu_identity() -> str:
    """The CPU model and every instruction-set flag it reports: what code compiled for it needs."""
    return f"{cpu_name()}; {_cpuinfo('flags') or platform.machine()}"
