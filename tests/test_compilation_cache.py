"""The `fmjax` command keeps JAX's persistent compilation cache by default
(fmjax/runtime/compilation_cache.py): a second run of a config loads the programs the first one
compiled, and its metrics are equal to the first's bit for bit."""

import os

from conftest import read_metrics, run_cli
from fmjax.data import mnist1d
from fmjax.runtime import cache, compilation_cache

FLAGS = ("--config", "experiments/mnist1d/cnn.py:runlocal", "--config.train.num_steps=20",
         "--noprogress")
HIT = "Persistent compilation cache hit for 'jit_train_call'"


def _without_perf(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def test_a_second_run_loads_the_first_runs_programs_with_equal_metrics(tmp_path, monkeypatch):
    data = tmp_path / "cache"
    data.mkdir()
    mnist1d.load_arrays()   # generated once into the session's cache, shared with this run's
    (data / "mnist1d.npz").symlink_to(cache.cache_dir() / "mnist1d.npz")
    # JAX_COMPILATION_CACHE_DIR="" is unset: fmjax's own folder; log_compiles logs the hits
    env = {"FMJAX_CACHE_DIR": str(data), "JAX_COMPILATION_CACHE_DIR": "", "JAX_LOG_COMPILES": "1"}
    for run in ("first", "second"):
        run_cli("train", *FLAGS, "--workdir", tmp_path / run, env=env)
    monkeypatch.setenv("FMJAX_CACHE_DIR", str(data))
    assert os.listdir(compilation_cache.folder())   # under FMJAX_CACHE_DIR, this CPU's folder
    assert HIT not in (tmp_path / "first" / "library.log").read_text()
    assert HIT in (tmp_path / "second" / "library.log").read_text()
    first, second = (_without_perf(read_metrics(tmp_path / run)) for run in ("first", "second"))
    assert second == first


def test_bad_input_writes_nothing_to_the_cache(tmp_path):
    """Nothing compiles before the input is checked (no JAX work at import, fmjax/tasks)."""
    env = {"FMJAX_CACHE_DIR": str(tmp_path / "cache"), "JAX_COMPILATION_CACHE_DIR": ""}
    proc = run_cli("eval", "--workdir", tmp_path / "none", check=False, env=env)
    assert (proc.returncode, proc.stderr) == (
        2, f"fmjax: error: {tmp_path / 'none'} holds no fmjax run (no config.json)\n")
    assert not (tmp_path / "cache").exists()
