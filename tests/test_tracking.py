"""Watching a run: a profile window writes a trace XProf opens, TensorBoard gets the config (text
and hparams), and an offline Weights & Biases run gets the config, every metric and image grids,
continued by a resumed run. One short run (30 + 10 steps) serves every test here."""

import importlib.util
import json
import pathlib
import re
import struct

import jax
import numpy as np
import pytest

from conftest import read_metrics, run_cli, tensorboard_events
from fmjax import configs
from fmjax.errors import UserError
from fmjax.metrics import wandb_sink
from fmjax.metrics.writers import MetricWriters
from fmjax.runtime import profiler
from fmjax.train import train_and_evaluate
from test_cli import _assert_clean_failure

wandb = pytest.importorskip("wandb")


def _config(num_steps: int):
    return configs.experiment(
        model=dict(name="mlp", hidden_size=32), data=dict(name="mnist1d"),
        train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=200, log_every=10,
                   eval_every=30, steps_per_call=10, profile_steps=(10, 20)),
        optimizer=dict(name="adam", learning_rate=3e-3), checkpoint=dict(every=30, keep=2),
        logging=dict(wandb_project="fmjax-test", wandb_tags=("ci",)))


@pytest.fixture(scope="module")
def offline_wandb():
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory, offline_wandb):
    """A run trained to step 30, its W&B run id then, and the same run resumed to step 40."""
    workdir = tmp_path_factory.mktemp("tracked")
    train_and_evaluate(_config(30), workdir, show_progress=False)
    first_id = (workdir / wandb_sink.RUN_ID_FILE).read_text()
    train_and_evaluate(_config(40), workdir, show_progress=False)
    return workdir, first_id


# ---- Profiles ------------------------------------------------------------------------------------

def test_profile_steps_write_a_trace_xprof_opens(run):
    workdir, _ = run
    traces = list((workdir / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0, traces


@pytest.mark.parametrize("window, expected", [   # (event, first step of the call it is at)
    ((15, 35), [("start", 10), ("stop", 30)]),
    ((10, 20), [("start", 10), ("stop", 10)]),
    ((50, 100), [("start", 50), ("stop", "end of training")]),
    ((60, 70), []),
])
def test_profile_window_covers_whole_calls(monkeypatch, window, expected):
    """60 steps, 10 per call: the trace holds every call that runs a step of the window, whole."""
    events = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda _: events.append(("start", step)))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append(("stop", step)))
    with profiler.window(window, pathlib.Path("unused")) as profile:
        for step in range(0, 60, 10):   # the call that runs steps step + 1 .. step + 10
            with profile.call(step, 10):
                pass
            profile.called(step + 10, None)
        step = "end of training"
    assert events == expected


@pytest.mark.parametrize("steps, fragment", [
    ((20, 10), "config.train.profile_steps=(20, 10) is not a window: give (START, STOP) with "
               "START < STOP"),
    ((10, 10), "config.train.profile_steps=(10, 10) is not a window"),
    ((10,), "config.train.profile_steps=(10,) is not a window"),
    ((-5, 10), "config.train.profile_steps[0]=-5 is out of range: must be an integer in [0, "),
])
def test_bad_profile_steps_are_one_config_error(steps, fragment):
    config = _config(30)
    config.train.profile_steps = steps
    with pytest.raises(UserError, match=re.escape(fragment)):
        configs.validate(config)


def test_bad_profile_steps_stop_the_cli_before_the_workdir(tmp_path):
    workdir = tmp_path / "never_created"
    proc = run_cli("train", "--config", "experiments/mnist1d/mlp.py", "--workdir", workdir,
                   "--config.train.profile_steps=(20,10)", check=False)
    _assert_clean_failure(proc, workdir, "config.train.profile_steps=(20, 10) is not a window")


# ---- TensorBoard: the config as text and hparams ---------------------------------------------

def test_tensorboard_gets_the_config_as_text_and_hparams(run):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    workdir, _ = run
    values = {v.tag: v for e in tensorboard_events(workdir / "tensorboard")
              for v in e.summary.value}
    text = values["config/text_summary"].tensor.string_val[0].decode()
    assert '"num_steps": 40' in text   # the resumed run's config, written at its start
    start = HParamsPluginData.FromString(
        values["_hparams_/session_start_info"].metadata.plugin_data.content).session_start_info
    assert start.hparams["train.batch_size"].number_value == 32
    assert start.hparams["model.name"].string_value == "mlp"
    assert start.hparams["train.profile_steps"].string_value == "[10, 20]"
    experiment = HParamsPluginData.FromString(
        values["_hparams_/experiment"].metadata.plugin_data.content).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"train/loss", "eval/accuracy"}


# ---- Weights & Biases ------------------------------------------------------------------------

def _wandb_runs(workdir: pathlib.Path) -> list[pathlib.Path]:
    return sorted((workdir / "wandb").glob("offline-run-*"))


def _records(run_dir: pathlib.Path) -> list:
    """The records of an offline run's transaction log `run-ID.wandb`: a 7-byte W&B header, then
    LevelDB log records (checksum, length, type; FULL = 1, or FIRST ... LAST = 4) in 32 KiB
    blocks, each holding a `Record` protobuf."""
    from wandb.proto import wandb_internal_pb2
    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:   # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def _history(run_dir: pathlib.Path) -> list[dict]:
    """The rows `wandb.log` wrote, {"_step": step, key: value}; an image's fields are keyed
    "name/field"."""
    return [{"/".join(item.nested_key) or item.key: json.loads(item.value_json)
             for item in record.history.item}
            for record in _records(run_dir) if record.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_holds_the_config_and_every_metric(run):
    workdir, first_id = run
    runs = _wandb_runs(workdir)
    assert runs and all(r.name.endswith(first_id) for r in runs), runs   # resumed: one W&B run
    run_record = next(r.run for r in _records(runs[-1]) if r.WhichOneof("record_type") == "run")
    assert (run_record.run_id, run_record.project, list(run_record.tags)) == \
        (first_id, "fmjax-test", ["ci"])
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["train"]["num_steps"] == 40 and config["model"]["name"] == "mlp", config
    logged = {row["_step"]: row for r in runs for row in _history(r)}
    for record in read_metrics(workdir):
        row = logged[record["step"]]
        for key, value in record.items():
            if key != "step":
                assert row[key] == pytest.approx(value), (key, row, record)


def test_wandb_gets_image_grids(tmp_path, offline_wandb):
    sink = wandb_sink.WandbSink.open(_config(30).logging, {"a": 1}, tmp_path)
    writers = MetricWriters(tmp_path, 0, 10, show_progress=False, sinks=[sink])
    writers.write_images(10, {"samples": np.random.default_rng(0).uniform(size=(4, 8, 8, 1))})
    writers.close()
    run_dir = _wandb_runs(tmp_path)[0]
    (row,) = _history(run_dir)
    assert (row["_step"], row["samples/_type"], row["samples/width"]) == (10, "image-file", 266)
    assert (run_dir / "files" / row["samples/path"]).read_bytes() == \
        (tmp_path / "images" / "samples_00000010.png").read_bytes()   # the grid images/ gets


def test_wandb_project_without_wandb_is_one_error_before_the_workdir(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    with pytest.raises(UserError, match=r"needs wandb, which is not installed: pip install "
                                        r"'fmjax\[wandb\]'"):
        train_and_evaluate(_config(30), tmp_path / "never_created", show_progress=False)
    assert not (tmp_path / "never_created").exists()
