"""Checkpoints are verified on every read: each array's checksum is stored with it, and a damaged
checkpoint (a garbled or missing file, or values changed behind the file format's back) is never
trained on or evaluated: resume and eval fall back to the newest intact one with one line, and
the resumed run ends bit-identical to one that was never damaged."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, run_cli
from fmjax import checkpoint, integrity, runs
from test_train import model_metrics

FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.model.dropout_rate=0.1",
         "--config.train.steps_per_call=10", "--config.train.log_every=10",
         "--config.train.eval_every=20", "--config.checkpoint.every=20",
         "--config.checkpoint.keep=3", "--noprogress"]
LOCAL = ("fmjax.lock", "library.log")   # rewritten by any start: not part of the run's record


def checksum(x) -> str:
    return integrity.checksums({"x": jnp.asarray(x)})["x"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int32", "uint8", "bool"])
def test_a_checksum_changes_with_any_bit_or_position(dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (7, 33)) if dtype == "bool" else rng.normal(size=(7, 33)) * 50
    x = np.asarray(jnp.asarray(x).astype(dtype))
    reference = checksum(x)
    assert checksum(x.copy()) == reference
    words = x.view(np.uint8 if x.itemsize == 1 else f"u{x.itemsize}")
    for _ in range(20):
        i, j = rng.integers(7), rng.integers(33)
        flipped = words.copy()
        flipped[i, j] ^= 1 if dtype == "bool" else 1 << int(rng.integers(8 * x.itemsize))
        assert checksum(flipped.view(x.dtype)) != reference
    swapped = x.copy()
    a, b = np.unravel_index(np.flatnonzero(x != x.flat[0])[0], x.shape), (0, 0)
    swapped[a], swapped[b] = x[b], x[a]
    assert checksum(swapped) != reference
    assert len(reference) == 16


def test_a_checksum_does_not_depend_on_the_mesh_nor_on_where_it_is_computed():
    """On 8 devices with four shardings and on one device, hashed on the devices and on the
    host: one checksum per array."""
    script = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from fmjax import integrity
mesh = jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
rng = np.random.default_rng(0)
for dtype in ["float32", "bfloat16", "float16", "int8", "int32", "uint8", "bool"]:
    x = jnp.asarray(rng.normal(size=(16, 24)) * 50).astype(dtype)
    reference = integrity._on_device([jax.device_put(x, jax.devices()[0])])[0]
    for spec in (P(), P("a", "b"), P("b", None), P(None, ("a", "b"))):
        y = jax.device_put(x, NamedSharding(mesh, spec))
        for way in (integrity._on_device, integrity._on_host):
            assert (way([y])[0] == reference).all(), (dtype, spec, way)
scalar = jnp.float32(3.0)
assert (integrity._on_device([scalar])[0] == integrity._on_host([scalar])[0]).all()
print("same")
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "same", proc.stderr[-3000:]


def overwrite_4kb(step_dir) -> None:
    """4 KB of fixed random bytes in the middle of the largest array-data file: what a bad disk
    block or a stray write does."""
    data = max((p for p in (step_dir / "state").rglob("*") if p.is_file() and
                p.parent.name == "d"), key=lambda p: p.stat().st_size)
    with open(data, "r+b") as f:
        f.seek(data.stat().st_size // 2 - 2048)
        f.write(np.random.default_rng(0).bytes(4096))


def change_a_value(step_dir, key="params.head.kernel") -> None:
    """Rewrite one array of the checkpoint through TensorStore itself: readable, well-formed, and
    wrong (what no file format notices)."""
    import tensorstore as ts
    spec = {"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": f"file://{step_dir}/state/",
                                          "path": f"{key}/"}}
    array = ts.open(spec).result()
    values = array.read().result()
    values[0, 0] += 1e-3
    array.write(values).result()


def snapshot(workdir) -> dict:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and p.name not in LOCAL}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A run that was never damaged: 60 steps, checkpoints at 20, 40, 60."""
    workdir = tmp_path_factory.mktemp("integrity") / "straight"
    run_cli("train", "--workdir", workdir, *FLAGS, "--config.train.num_steps=60")
    return workdir


@pytest.fixture(scope="module")
def trained_40(tmp_path_factory):
    """The same run stopped at step 40 (checkpoints 20 and 40), for each test to copy."""
    workdir = tmp_path_factory.mktemp("integrity") / "at_40"
    run_cli("train", "--workdir", workdir, *FLAGS, "--config.train.num_steps=40")
    return workdir


@pytest.fixture
def stopped_at_40(trained_40, tmp_path):
    return shutil.copytree(trained_40, tmp_path / "run")


def test_damaged_newest_checkpoint_is_skipped_and_the_resume_is_exact(straight, stopped_at_40):
    workdir = stopped_at_40
    overwrite_4kb(workdir / "checkpoints" / "40")
    logged = {r["step"]: r for r in model_metrics(straight)}

    proc = run_cli("eval", "--workdir", workdir)
    skipped = "fmjax: checkpoint 40 is damaged ("
    assert proc.stderr.startswith(skipped) and proc.stderr.endswith("); skipped\n"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["step"] == 20 and out["eval/loss"] == pytest.approx(logged[20]["eval/loss"])

    proc = run_cli("eval", "--workdir", workdir, "--step=40", check=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("fmjax: error: checkpoint 40 is damaged (")
    assert proc.stderr.endswith(f"in {workdir / 'checkpoints'}; choose another --step\n")

    proc = run_cli("train", "--workdir", workdir, *FLAGS, "--config.train.num_steps=60")
    moved = workdir / "damaged_checkpoints" / "40"
    assert proc.stderr.startswith(skipped), proc.stderr
    assert proc.stderr.endswith(f"); moved to {moved}\n") and len(proc.stderr.splitlines()) == 1
    assert "resuming from the checkpoint at step 20" in proc.stdout
    assert (moved / "state").is_dir()
    assert checkpoint.read_only_manager(workdir).all_steps() == [20, 40, 60]
    assert model_metrics(workdir) == model_metrics(straight)
    jax.tree.map(np.testing.assert_array_equal, runs.load(workdir).state,
                 runs.load(straight).state)


def test_values_changed_behind_the_format_fail_their_checksum(stopped_at_40):
    workdir = stopped_at_40
    change_a_value(workdir / "checkpoints" / "40")
    proc = run_cli("eval", "--workdir", workdir)
    assert proc.stderr == ("fmjax: checkpoint 40 is damaged (params/head/kernel differs from its "
                           "checksum); skipped\n")
    assert json.loads(proc.stdout)["step"] == 20


@pytest.mark.parametrize("damage", [
    lambda step_dir: overwrite_4kb(step_dir),
    lambda step_dir: (step_dir / "state" / "_METADATA").unlink(),
    lambda step_dir: [p.unlink() for p in (step_dir / "checksums").iterdir()],
    lambda step_dir: (step_dir / "state" / "manifest.ocdbt").write_text("x"),
], ids=["bytes", "metadata", "checksums", "manifest"])
def test_no_intact_checkpoint_is_one_line_and_changes_nothing(stopped_at_40, damage):
    workdir = stopped_at_40
    for step in (20, 40):
        damage(workdir / "checkpoints" / str(step))
    before = snapshot(workdir)
    proc = run_cli("train", "--workdir", workdir, *FLAGS, "--config.train.num_steps=60",
                   check=False)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"fmjax: error: no intact checkpoint in {workdir / 'checkpoints'}: "
                               "checkpoint 40 is damaged (")
    assert "; checkpoint 20 is damaged (" in lines[0]
    assert lines[0].endswith("; move the directory aside to start afresh")
    assert snapshot(workdir) == before
