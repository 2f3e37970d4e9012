"""`fmjax compress`: a quantized or pruned run is an ordinary run (eval and sample read
it), its compression.json holds what was measured, and bad input or a stop leaves no OUT."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, gpt_flags, run_cli
from fmjax import configs, runs, train
from fmjax.compression import command
from fmjax.errors import UserError

RECORD_KEYS = {"method", "options", "source", "bytes_before", "bytes_after",
               "checkpoint_bytes_before", "checkpoint_bytes_after", "metrics_before", "metrics_after", "latency_before",
               "latency_after", "versions", "cpu"}


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """A 40-step MNIST-1D CNN run (in this process: its compiled steps serve the tests)."""
    workdir = tmp_path_factory.mktemp("compress") / "cnn"
    config = configs.experiment(
        model=dict(name="cnn1d"), data=dict(name="mnist1d"),
        train=dict(num_steps=40, batch_size=32, eval_batch_size=500, eval_every=40,
                   log_every=40, steps_per_call=20),
        optimizer=dict(name="adam", learning_rate=3e-3), checkpoint=dict(every=40))
    train.train_and_evaluate(config, workdir, show_progress=False)
    return workdir


@pytest.fixture(scope="module")
def int8_out(cnn_run):
    """(OUT, the summary line) of `fmjax compress --method int8` of `cnn_run`."""
    out = cnn_run.parent / "cnn-int8"
    return out, command.summary(command.compress(cnn_run, out, command.Options("int8")))


def test_int8_writes_a_run_that_eval_reads_with_the_recorded_metrics(cnn_run, int8_out):
    out, summary = int8_out
    record = json.loads((out / command.COMPRESSION_FILE).read_text())
    assert RECORD_KEYS <= set(record) and record["method"] == "int8"
    assert record["source"] == {"workdir": str(cnn_run), "step": 40}
    assert record["options"] == {"calibration": "absmax"}
    assert record["bytes_before"] / record["bytes_after"] > 3   # float32 -> int8 + scales
    assert record["checkpoint_bytes_after"] < record["checkpoint_bytes_before"]
    assert summary["bytes_after"] == record["bytes_after"]
    for side in ("before", "after"):
        assert record[f"latency_{side}"]["calls"] == 10
        assert record[f"latency_{side}"]["batch_size"] == 500
        assert record[f"latency_{side}"]["median_ms"] > 0
    evaluated = json.loads(run_cli("eval", "--workdir", out).stdout.splitlines()[-1])
    assert evaluated.pop("step") == 0
    assert evaluated == record["metrics_after"]
    assert set(record["metrics_before"]) == set(evaluated)
    assert abs(record["metrics_after"]["eval/accuracy"]
               - record["metrics_before"]["eval/accuracy"]) <= 0.01


def test_prune_reports_sparsity_and_keeps_zeros_through_the_finetune(cnn_run, tmp_path, capsys):
    out = tmp_path / "pruned"
    options = command.Options("prune", sparsity=0.5, granularity="layer", finetune_steps=4)
    record = command.compress(cnn_run, out, options)
    progress = capsys.readouterr()
    assert progress.out == ""   # stdout is the command's one JSON line
    assert "step 4/4" in progress.err
    assert record["out_step"] == 4
    assert record["options"] == {"sparsity": 0.5, "granularity": "layer", "finetune_steps": 4}
    layers = record["sparsity"]["layers"]
    assert sorted(layers) == ["conv_0/kernel", "conv_1/kernel", "conv_2/kernel", "head/kernel"]
    assert all(abs(s - 0.5) < 0.02 for s in layers.values()), layers
    pruned, tuned = runs.load(out, step=0).params, runs.load(out).params
    for name in layers:
        layer = name.split("/")[0]
        zero = np.asarray(pruned[layer]["kernel"]) == 0
        assert np.all(np.asarray(tuned[layer]["kernel"])[zero] == 0), name
        assert not np.array_equal(tuned[layer]["kernel"], pruned[layer]["kernel"]), name
    assert record["bytes_after"] == record["bytes_before"]   # dense arrays ...
    assert record["checkpoint_bytes_after"] < record["checkpoint_bytes_before"]   # ... zeros shrink


@pytest.mark.parametrize("options, message", [
    (command.Options("int3"), "unknown --method 'int3' (known: int8, int4, int8_dynamic, prune)"),
    (command.Options("prune"), "--method prune needs --sparsity S, the fraction of weights to "
     "zero (0 <= S < 1)"),
    (command.Options("prune", sparsity=1.0), "--sparsity must be in [0, 1) (got 1.0)"),
    (command.Options("prune", sparsity=-0.1), "--sparsity must be in [0, 1) (got -0.1)"),
    (command.Options("int8", sparsity=0.5), "--sparsity does not apply to --method int8 (it "
     "takes --calibration)"),
    (command.Options("prune", sparsity=0.5, group_size=8), "--group_size does not apply to "
     "--method prune (it takes --sparsity --granularity --finetune_steps)"),
    (command.Options("int8", granularity="layer"), "--granularity does not apply to --method "
     "int8 (it takes --calibration)"),
    (command.Options("prune", sparsity=0.5, finetune_steps=-1),
     "--finetune_steps must be in [0, 2**31 - 1] (got -1)"),
    (command.Options("prune", sparsity=0.5, finetune_steps=2**40),
     f"--finetune_steps must be in [0, 2**31 - 1] (got {2**40})"),
    (command.Options("int4", calibration="absmax,nan"), "--calibration='absmax,nan' is not one "
     "of absmax[,SCALE], minmax[,SCALE], rms,SCALE (SCALE > 0), fixed,MIN,MAX (MIN <= 0 <= MAX, "
     "MIN < MAX)"),
])
def test_bad_options_are_refused_before_any_work(cnn_run, tmp_path, options, message):
    with pytest.raises(UserError) as e:
        command.compress(cnn_run, tmp_path / "out", options)
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []


def test_bad_runs_are_refused_with_one_line_and_no_out(int8_out, tmp_path):
    out, _ = int8_out
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text((out / "config.json").read_text()
                                                          .replace('"converted": true',
                                                                   '"converted": false'))
    for workdir, message in [
            (tmp_path / "nothing", f"{tmp_path / 'nothing'} holds no fmjax run (no config.json)"),
            (tmp_path / "config_only", f"{tmp_path / 'config_only'} holds no checkpoint")]:
        with pytest.raises(UserError) as e:
            command.compress(workdir, tmp_path / "o", command.Options("int8"))
        assert str(e.value) == message
    proc = run_cli("compress", "--workdir", out, "--out", tmp_path / "o", "--method", "int8",
                   check=False)
    message = f"{out} holds a run that fmjax compress already quantized; compress its float " \
        "source instead"
    assert_one_line_error(proc, message)
    assert proc.stderr == f"fmjax: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config_only"]


def test_a_qat_run_converts_with_its_own_settings_and_a_note_otherwise():
    config = configs.experiment(model=dict(name="cnn1d"), data=dict(name="mnist1d"))
    config.quantization.update(method="int4", group_size=16, calibration="absmax,0.9")
    own, note = command.resolve(command.Options("int4"), config)
    assert (own.group_size, own.calibration, note) == (16, "absmax,0.9", None)
    other, note = command.resolve(command.Options("int4", group_size=32), config)
    assert note == ("the run was trained with quantization-aware int4 (calibration absmax,0.9, "
                    "group size 16); converting it to int4 with calibration absmax,0.9, group "
                    "size 32 is not exact")
    plain, note = command.resolve(command.Options("int8"), configs.experiment(
        model=dict(name="cnn1d"), data=dict(name="mnist1d")))
    assert (plain.calibration, plain.group_size, note) == ("absmax", 32, None)


def test_existing_out_is_left_untouched(cnn_run, int8_out):
    out, _ = int8_out
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(UserError, match="already exists; compress writes a new run directory"):
        command.compress(cnn_run, out, command.Options("int8"))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_stop_or_a_rival_out_leaves_no_partial_directory(cnn_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(command, "finetune", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        command.compress(cnn_run, out, command.Options("prune", sparsity=0.5, finetune_steps=3))
    assert list(tmp_path.iterdir()) == []
    real_measure = command.measure

    def rival_writes_out(run):   # another process finishes first, while this one measures OUT
        if not out.exists():
            out.mkdir()
            (out / "theirs").write_text("x")
        return real_measure(run)
    monkeypatch.setattr(command, "measure", rival_writes_out)
    with pytest.raises(UserError, match="was created by another process while compressing"):
        command.compress(cnn_run, out, command.Options("prune", sparsity=0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["theirs"]


@pytest.mark.slow   # 57 s on 2 busy cores: a GPT trained, compressed and sampled in subprocesses
def test_sample_from_a_quantized_char_gpt(tmp_path, text_file):
    run, out = tmp_path / "gpt", tmp_path / "gpt-int8"
    run_cli("train", "--workdir", run, *gpt_flags(text_file, num_steps=20))
    summary = json.loads(run_cli("compress", "--workdir", run, "--out", out, "--method",
                                 "int8").stdout.splitlines()[-1])
    assert abs(summary["eval/loss after"] - summary["eval/loss before"]) < 0.02
    proc = run_cli("sample", "--workdir", out, "--prompt", "the", "--max_new_tokens", "20")
    assert proc.stdout.startswith("the") and len(proc.stdout) >= 20


@pytest.mark.slow   # 21 s: trained and compressed on 8 devices, evaluated on 1
def test_compress_on_a_sharded_mesh_and_eval_on_one_device(tmp_path):
    run = tmp_path / "run"
    run_cli("train", "--config", "experiments/mnist1d/cnn.py", "--workdir", run,
            "--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.train.batch_size=64",
            "--config.train.num_steps=20", "--config.train.eval_every=20",
            "--config.checkpoint.every=20",
            "--config.train.steps_per_call=10", "--noprogress", devices=8)
    for method in ("int8", "prune"):
        extra = ["--sparsity", "0.5", "--finetune_steps", "2"] if method == "prune" else []
        target = tmp_path / f"out-{method}"
        run_cli("compress", "--workdir", run, "--out", target, "--method", method, *extra,
                devices=8)
        record = json.loads((target / command.COMPRESSION_FILE).read_text())
        evaluated = json.loads(run_cli("eval", "--workdir", target).stdout.splitlines()[-1])
        evaluated.pop("step")
        for name, value in record["metrics_after"].items():
            assert evaluated[name] == pytest.approx(value, rel=1e-5), (method, name)


@pytest.mark.parametrize("inside", ["sub", "checkpoints/999"])
def test_out_inside_the_run_is_refused_and_the_run_left_as_it_is(cnn_run, inside):
    before = sorted(p.relative_to(cnn_run) for p in cnn_run.rglob("*"))
    with pytest.raises(UserError, match="is inside --workdir"):
        command.compress(cnn_run, cnn_run / inside, command.Options("int8"))
    assert sorted(p.relative_to(cnn_run) for p in cnn_run.rglob("*")) == before


def test_out_a_dangling_link_is_refused_before_any_work(cnn_run, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="already exists; compress writes a new run directory"):
        command.compress(cnn_run, tmp_path / "link", command.Options("int8"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_out_in_a_directory_that_cannot_be_written_is_one_line(cnn_run, tmp_path, monkeypatch):
    import pathlib

    def refuse(self, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(self))
    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    with pytest.raises(UserError, match=r"cannot create a directory in .* \(Operation not "):
        command.compress(cnn_run, tmp_path / "out", command.Options("int8"))
