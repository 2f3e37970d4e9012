"""Shared test helpers. Tests run on CPU; multi-device tests start subprocesses with 8 forced
CPU devices (XLA_FLAGS must be set before JAX is imported)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# Generated datasets (MNIST-1D takes seconds to build) are shared by all tests and subprocesses.
os.environ.setdefault("FMJAX_CACHE_DIR", str(REPO / ".pytest_cache" / "fmjax-data"))


def run_cli(*args, devices: int = 1, check: bool = True, cwd=REPO) -> subprocess.CompletedProcess:
    """Run `python -m fmjax.main ARGS` with `devices` forced CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run([sys.executable, "-m", "fmjax.main", *map(str, args)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"fmjax {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def read_metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text()
            .splitlines()]


@pytest.fixture
def small_config():
    """A fast MNIST-1D CNN config (tests shrink it further as needed)."""
    from fmjax import configs
    return configs.experiment(
        model=dict(name="cnn1d"), data=dict(name="mnist1d"),
        train=dict(num_steps=60, batch_size=32, eval_batch_size=200, log_every=10,
                   eval_every=30, steps_per_call=10, seed=0),
        optimizer=dict(name="adam", learning_rate=3e-3),
        checkpoint=dict(every=30, keep=2))
