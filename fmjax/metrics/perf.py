"""Throughput as researchers report it: tokens/s, model TFLOP/s per device and MFU.

MFU = achieved model FLOP/s / the device's peak dense bf16 FLOP/s (PaLM appendix B). Model FLOPs
come from the task (6N + 12·L·H·Q·T per token for language models), so rematerialisation does
not inflate them. Peaks are the vendors' dense bf16 figures; `train.peak_tflops_per_device`
overrides the table (and gives MFU on devices it lacks, such as CPUs).
"""

import math

import jax

# device_kind prefix -> peak dense bf16 TFLOP/s per device (per chip for TPUs).
PEAK_BF16_TFLOPS = {
    "NVIDIA H200": 989.0,
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100": 989.0,          # SXM
    "NVIDIA A100": 312.0,
    "NVIDIA L4": 121.0,
    "NVIDIA A10G": 70.0,
    "NVIDIA GeForce RTX 4090": 165.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v5": 459.0,
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
}


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
    """The override if set, else the longest table prefix of `device_kind`, else None."""
    if override > 0:
        return override
    matches = [k for k in PEAK_BF16_TFLOPS if device_kind.startswith(k)]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def throughput_fn(task, abstract_params, config):
    """steps_per_sec -> {'perf/...': value}, for the task's tokens and FLOPs per step."""
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params))
    tokens = task.tokens_per_step()
    flops = task.flops_per_step(num_params)
    num_devices = jax.device_count()
    peak = peak_tflops(jax.devices()[0].device_kind, config.train.peak_tflops_per_device)

    def metrics(steps_per_sec: float) -> dict[str, float]:
        out = {"perf/steps_per_sec": steps_per_sec}
        if tokens:
            out["perf/tokens_per_sec"] = steps_per_sec * tokens
        if flops:
            tflops = steps_per_sec * flops / num_devices / 1e12
            out["perf/tflops_per_device"] = tflops
            if peak:
                out["perf/mfu"] = tflops / peak
        return out
    return metrics
