"""Shared test helpers. Tests run on CPU; multi-device tests start subprocesses with 8 forced
CPU devices (XLA_FLAGS must be set before JAX is imported)."""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
from unittest import mock

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# Experiment files (get_config) and sweep files (get_sweep: `sweep_*.py`, fmjax/sweep/spec.py).
EXPERIMENTS = sorted(str(p.relative_to(REPO)) for p in REPO.glob("experiments/**/*.py")
                     if not p.name.startswith("sweep_"))
SWEEPS = sorted(str(p.relative_to(REPO)) for p in REPO.glob("experiments/**/sweep_*.py"))
# Generated datasets (MNIST-1D takes seconds to build) are shared by all tests and subprocesses.
os.environ.setdefault("FMJAX_CACHE_DIR", str(REPO / ".pytest_cache" / "fmjax-data"))
# `fmjax` subprocesses share JAX's persistent compilation cache, emptied when a session starts: a
# run that compiles what an earlier run of the session compiled (a resumed run, `fmjax sample`
# after the first) loads the executable instead (a 20-step GAN run: 32 s -> 11 s). The loaded
# executable is the compiled one: the metrics are equal bit for bit with and without the cache.
JAX_CACHE = REPO / ".pytest_cache" / "jax-compilation-cache"
# ... and so do subprocesses that build their own environment from os.environ (fmjax turns the
# cache on by default: without this they would keep one under FMJAX_CACHE_DIR across sessions).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE))


def pytest_configure(config):
    if not hasattr(config, "workerinput"):   # the session's first process, not an xdist worker
        shutil.rmtree(JAX_CACHE, ignore_errors=True)
    # Tests that call the train loop in this process share the cache too: each call jits its
    # steps afresh, so a resumed run or a second run of one config compiled everything again.
    # Every compilation is stored (default: those over 1 s), since these are small: test_train
    # took 71 CPU s without the cache and 60 s with it (a resume test: 61 s -> 27 s),
    # test_finetune 84 -> 66 s, test_early_stopping 34 -> 26 s, test_quantization 42 -> 35 s;
    # test_models (no compilation repeated) 12.5 s either way.
    import jax
    jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


# Under -n 2 a module is one unit of work (--dist loadscope) and, with --no-loadscope-reorder,
# units start in collection order. These modules, the longest first (measured with `pytest -n 2
# --durations=0`), start before the rest, so that the two workers finish together: xdist's default
# order (most tests first) started the minute-long two-test modules (test_mlm) last, and one
# worker waited for the other.
LONGEST_MODULES_FIRST = ("test_lm", "test_sweep", "test_sharding", "test_generative",
                         "test_translation", "test_mlm", "test_cli", "test_finetune",
                         "test_preemption", "test_vit", "test_quantization", "test_train")
# test_notebooks (a minute) stays out of the list: in collection order it starts after these, whose
# short runs (test_lm, test_generative, test_translation, test_finetune, test_sweep) compile what
# its notebooks' fast mode runs, so it loads their programs from the compilation cache.


def pytest_collection_modifyitems(items):
    first = {name: rank for rank, name in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: first.get(item.path.stem, len(first)))   # stable: modules whole


def cli_env(devices: int = 1, env: dict | None = None) -> dict:
    """The environment of an `fmjax` subprocess: CPU with `devices` forced devices, the session's
    compilation cache, then `env`."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE),
           **(env or {})}
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_cli(*args, devices: int = 1, check: bool = True, cwd=REPO,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m fmjax ARGS` with `devices` forced CPU devices (and `env` set)."""
    proc = subprocess.run([sys.executable, "-m", "fmjax", *map(str, args)],
                          env=cli_env(devices, env),
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"fmjax {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def experiment_config(path: str, variant: str = ""):
    """The config of experiment `path` with `variant` ("runlocal", "digits,conv", ...)."""
    from fmjax import configs
    return configs.load_experiment(f"{REPO / path}:{variant}" if variant else str(REPO / path))


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


def generated_text(num_sentences: int = 4000, seed: int = 0) -> str:
    """English-like sentences from a small grammar: offline text a character model can learn."""
    import numpy as np
    rng = np.random.default_rng(seed)
    parts = [["the", "a", "my", "your"], ["red", "small", "old", "quick", "quiet"],
             ["cat", "dog", "king", "horse", "friend"], ["sees", "likes", "follows", "finds"]]
    sentences = []
    for _ in range(num_sentences):
        det, adj, noun, verb = (p[rng.integers(len(p))] for p in parts)
        det2, noun2 = parts[0][rng.integers(4)], parts[2][rng.integers(5)]
        sentences.append(f"{det} {adj} {noun} {verb} {det2} {noun2}.")
    return "\n".join(sentences) + "\n"


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(generated_text())
    return path


def gpt_flags(text_file, num_steps: int = 40) -> list[str]:
    """A small character GPT on `text_file` (the :runlocal model: 4 layers, 128 wide, context 64)."""
    return ["--config", "experiments/shakespeare/gpt_char.py:runlocal",
            f"--config.data.path={text_file}", f"--config.train.num_steps={num_steps}",
            "--config.train.log_every=10", "--config.train.steps_per_call=10",
            f"--config.train.eval_every={num_steps}", f"--config.checkpoint.every={num_steps}",
            "--config.optimizer.warmup_steps=5", "--config.train.batch_size=16",
            "--config.data.eval_windows=64", "--noprogress"]


def tensorboard_events(directory) -> list:
    """Every Event in the TensorBoard event files directly in `directory`, each record checked as
    TensorBoard reads it (TFRecord framing: length, its masked CRC-32C, the record, its CRC)."""
    import struct
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c
    events = []
    for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            header, (header_crc,) = data[offset:offset + 8], struct.unpack(
                "<I", data[offset + 8:offset + 12])
            (length,) = struct.unpack("<Q", header)
            record = data[offset + 12:offset + 12 + length]
            (record_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
            assert (header_crc, record_crc) == (masked_crc32c(header), masked_crc32c(record)), path
            events.append(Event.FromString(record))
            offset += 16 + length
    return events


def cell_text(cell) -> str:
    """The stream and text/plain output of one executed notebook code cell."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def notebook_kernelspec(root, python) -> None:
    """A `python3` kernelspec under `root`/kernels that runs `python`: put first on JUPYTER_PATH,
    it shadows any user-level python3 spec that points at another Python."""
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fmjax tests)", "language": "python"}))


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    """The CLI refused with exit status 2 and exactly one stderr line that contains `fragment`."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-4000:])
    assert proc.stderr.startswith("fmjax: error: ") and fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr



def _mock_getitems(record_keys, generator, serialized=False):
    return [generator[key] for key in record_keys]


@contextlib.contextmanager
def mock_tfds(num_examples: int):
    """`tfds.testing.mock_data(num_examples)` in which batched reads from `tfds.data_source`
    work: TFDS 4.9.10's mock sets the data source's `__getitems__` as a plain attribute of a
    MagicMock, so it is called without `self` (TypeError); this stands in for the function it
    wraps. Never downloads."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking
    with mock.patch.object(mocking, "_getitems", _mock_getitems), \
            tfds.testing.mock_data(num_examples=num_examples):
        yield
