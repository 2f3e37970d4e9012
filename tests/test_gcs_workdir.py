"""A gs:// workdir, offline: epath's Cloud Storage backend and Orbax's TensorStore driver are sent
to a local directory that stands for the bucket, so every file fmjax writes must go through them
(one written with plain file operations would land in a local `gs:` directory instead)."""

import os
import re

import jax
import numpy as np
import pytest
from etils.epath import backend as epath_backend, gpath
from orbax.checkpoint._src.path import gcs_utils

from conftest import read_metrics
from fmjax import checkpoint, configs, plots, runs
from fmjax.errors import UserError
from fmjax.metrics.writers import PERF_PREFIX, read_jsonl
from fmjax.runtime import workdir_files
from fmjax.train import train_and_evaluate

URL = "gs://fmjax-test-bucket/runs/mlp"


class _LocalBucket(epath_backend._OsPathBackend):
    """epath's backend for gs://: gs://B/P is kept at ROOT/B/P."""

    def __init__(self, root):
        self.root = str(root)

    def local(self, path) -> str:
        path = os.fspath(path)
        return f"{self.root}/{path.removeprefix('gs://')}" if path.startswith("gs://") else path

    def url(self, local: str) -> str:
        return "gs://" + local.removeprefix(self.root + "/")

    def open(self, path, mode):
        if "w" in mode:   # Cloud Storage has no directories: any object name can be written
            os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)
        return super().open(self.local(path), mode)

    def exists(self, path):
        return super().exists(self.local(path))

    def isdir(self, path):
        return super().isdir(self.local(path))

    def listdir(self, path):
        return super().listdir(self.local(path))

    def glob(self, path):
        return [self.url(p) for p in super().glob(self.local(path))]

    def walk(self, top, **kwargs):
        for parent, dirs, files in super().walk(self.local(top), **kwargs):
            yield self.url(os.fspath(parent)), dirs, files

    def makedirs(self, path, **kwargs):
        return super().makedirs(self.local(path), **kwargs)

    def mkdir(self, path, **kwargs):
        return super().mkdir(self.local(path), **kwargs)

    def rmtree(self, path):
        return super().rmtree(self.local(path))

    def remove(self, path):
        return super().remove(self.local(path))

    def rename(self, path, dst):
        return super().rename(self.local(path), self.local(dst))

    def replace(self, path, dst):
        return super().replace(self.local(path), self.local(dst))

    def copy(self, path, dst, overwrite):
        return super().copy(self.local(path), self.local(dst), overwrite=overwrite)

    def stat(self, path):
        return super().stat(self.local(path))


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The local directory that stands for Cloud Storage (gs://B/P at bucket/B/P)."""
    root = tmp_path / "bucket"
    root.mkdir()
    local_bucket = _LocalBucket(root)
    monkeypatch.chdir(tmp_path)   # a write that skips epath would make tmp_path/gs:/...
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)   # else epath uses tf.io.gfile
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", local_bucket)
    monkeypatch.setattr(workdir_files, "check_url_support", lambda workdir: None)   # packages
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs",
                        lambda path: {"driver": "file", "path": local_bucket.local(path)})
    yield root / URL.removeprefix("gs://")
    assert not (tmp_path / "gs:").exists()


def _config(num_steps: int):
    return configs.experiment(
        model=dict(name="mlp", hidden_size=32), data=dict(name="mnist1d"),
        train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=200, log_every=10,
                   eval_every=10, steps_per_call=10, profile_steps=(10, 20)),
        optimizer=dict(name="adam", learning_rate=3e-3), checkpoint=dict(every=10, keep=2))


def _model_metrics(records):
    return [{k: v for k, v in r.items() if not k.startswith(PERF_PREFIX)} for r in records]


def test_gs_workdir_without_its_packages_is_one_error(monkeypatch):
    monkeypatch.setattr(workdir_files, "_importable", lambda module: module == "tensorflow")
    with pytest.raises(UserError, match=re.escape(
            f"workdir {URL}: a gs:// workdir needs gcsfs and google-cloud-storage: pip install "
            "'fmjax[gcs]'")):
        train_and_evaluate(_config(20), URL, show_progress=False)


def test_gs_workdir_trains_resumes_and_evaluates(bucket, tmp_path):
    train_and_evaluate(_config(20), URL, show_progress=False)
    assert (bucket / "checkpoints" / "20" / "commit_success.txt").exists()   # Orbax on GCS
    for name in ("config.json", "data_info.json", "metrics.jsonl"):
        assert (bucket / name).is_file(), name
    assert list((bucket / "tensorboard").glob("events.out.tfevents.*"))
    assert list((bucket / "profile").glob("plugins/profile/*/*.xplane.pb"))

    train_and_evaluate(_config(30), URL, show_progress=False)   # resumed from step 20
    train_and_evaluate(_config(30), tmp_path / "local", show_progress=False)
    assert (_model_metrics(read_jsonl(f"{URL}/metrics.jsonl"))
            == _model_metrics(read_metrics(tmp_path / "local")))
    assert [p.name for p in sorted((bucket / "eval_details").iterdir())] == [
        f"eval_{step:08d}.json" for step in (10, 20, 30)]
    auc = read_jsonl(f"{URL}/metrics.jsonl")[-1]["eval/roc_auc_ovr"]   # fmjax plot reads gs://
    assert plots.figure("roc", [URL]).axes[0].get_title().endswith(f"ROC, macro AUC {auc:.4f}")
    run = runs.load(URL)
    assert run.step == 30
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, run.params),
                 jax.tree.map(np.asarray, runs.load(tmp_path / "local").params))

    (bucket / "checkpoints" / "30" / "commit_success.txt").unlink()   # as if cut by a kill
    manager = checkpoint.read_only_manager(URL)
    assert manager.latest_step() == 20
    manager.close()
