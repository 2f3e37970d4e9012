"""The `fmjax` command line: train/eval/inspect work end to end, and bad input gets one line,
exit status 2, and an untouched workdir."""

import json
import shutil

import pytest

from conftest import REPO, read_metrics, run_cli

TINY = ["--config.train.num_steps=40", "--config.train.log_every=10",
        "--config.train.eval_every=20", "--config.train.steps_per_call=10",
        "--config.checkpoint.every=20", "--noprogress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workdir, the stdout of `fmjax train`) of a 40-step run."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli("train", "--config", "experiments/mnist1d/cnn.py", "--workdir", workdir, *TINY)
    return workdir, proc.stdout


@pytest.fixture(scope="module")
def trained_workdir(trained):
    return trained[0]


def test_train_writes_metrics_config_tensorboard_and_checkpoints(trained_workdir):
    records = read_metrics(trained_workdir)
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert {"train/loss", "train/accuracy", "eval/loss", "eval/accuracy", "eval/f1_macro",
            "eval/roc_auc_ovr"} <= set(records[1])
    config = json.loads((trained_workdir / "config.json").read_text())
    assert config["train"]["num_steps"] == 40 and config["model"]["name"] == "cnn1d"
    assert list((trained_workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (trained_workdir / "checkpoints").iterdir()) == ["20", "40"]


def test_train_prints_a_plain_line_per_log_step_and_eval_then_json(trained):
    """Not on a terminal (a nohup log, a pipe): no progress bar, one line per log_every steps and
    per eval, then the final metrics as the last line."""
    workdir, stdout = trained
    lines = stdout.splitlines()
    records = {r["step"]: r for r in read_metrics(workdir)}
    assert "\r" not in stdout
    assert json.loads(lines[-1]) == {k: v for k, v in records[40].items() if k.startswith("eval/")}
    train_lines = [line for line in lines if " steps/s, ETA " in line]
    assert len(train_lines) == 4, stdout
    for line, step in zip(train_lines, (10, 20, 30, 40)):
        assert line.startswith(f"step {step}/40: loss {records[step]['train/loss']:.4g}, "), line
    eval_lines = [line for line in lines if "eval/" in line and not line.startswith("{")]
    assert [line.split(": ")[0] for line in eval_lines] == ["step 20/40", "step 40/40"]
    assert f"eval/accuracy {records[20]['eval/accuracy']:.4g}" in eval_lines[0]
    assert len(lines) == len(train_lines) + len(eval_lines) + 1, stdout


def test_rerun_says_it_resumed(trained_workdir):
    proc = run_cli("train", "--config", "experiments/mnist1d/cnn.py", "--workdir",
                   trained_workdir, *TINY)
    assert "resuming from the checkpoint at step 40" in proc.stderr + proc.stdout


def test_eval_reproduces_the_logged_metrics(trained_workdir):
    logged = read_metrics(trained_workdir)
    for step in (20, None):
        args = ["eval", "--workdir", trained_workdir] + ([f"--step={step}"] if step else [])
        out = json.loads(run_cli(*args).stdout.strip().splitlines()[-1])
        expected = next(r for r in logged if r["step"] == (step or 40))
        assert out["step"] == (step or 40)
        assert out["eval/accuracy"] == pytest.approx(expected["eval/accuracy"], abs=1e-6)
        assert out["eval/loss"] == pytest.approx(expected["eval/loss"], rel=1e-5)


def test_inspect_prints_the_parameter_table():
    out = run_cli("inspect", "--config", "experiments/mnist1d/cnn.py").stdout
    assert "conv_0/kernel" in out and "(5, 1, 25)" in out and "(None, 'embed', 'mlp')" in out
    assert "total parameters: 5,210" in out


def _assert_clean_failure(proc, workdir, *fragments):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("fmjax: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not workdir.exists()


CNN = ["--config", "experiments/mnist1d/cnn.py"]


@pytest.mark.parametrize("args, devices, fragments", [
    (CNN + ["--config.train.foo=1"], 1, ["unknown config key --config.train.foo"]),
    (CNN + ["--config.trainx.foo=1"], 1, ["unknown config key --config.trainx.foo"]),
    (CNN + ["--config.train.num_steps=abc"], 1, ["num_steps"]),
    (CNN + ["--config.model.name=transformer9"], 1, ["unknown model 'transformer9'", "cnn1d"]),
    (CNN + ["--config.data.name=imagenet9"], 1, ["unknown dataset 'imagenet9'"]),
    (CNN + ["--config.optimizer.name=lion9"], 1, ["unknown optimizer 'lion9'", "adamw"]),
    (CNN + ["--config.mesh.data=3"], 1, ["needs 3 devices but 1 are available"]),
    (CNN + ["--config.mesh.data=8"], 8, ["batch_size", "not divisible by the data-parallel size 8"]),
    (CNN + ["--config.mesh.data=3"], 8, ["needs 3 devices but 8 are available"]),
    (CNN + ["--config.mesh.fsdp=3", "--config.mesh.data=-1"], 8, ["does not fit 8 devices"]),
    (["--config", "experiments/mnist1d/cnn.py:huge"], 1, ["unknown config variant 'huge'"]),
    (["--config", "experiments/nope.py"], 1, ["nope.py"]),
    (["--config", "experiments/translate/synthetic.py", "--config.optimizer.layer_decay=0.8"], 1,
     ["layer_decay needs layers named block_0", "decoder_block_0"]),
    (["--config", "experiments/images/cnn_tfds.py", "--config.data.download=False",
      "--config.data.data_dir=/nonexistent/tfds"], 1, ["TFDS", "mnist"]),
])
def test_bad_input_fails_before_any_work(tmp_path, args, devices, fragments):
    workdir = tmp_path / "never_created"
    proc = run_cli("train", "--workdir", workdir, *args, devices=devices, check=False)
    _assert_clean_failure(proc, workdir, *fragments)


def test_url_workdir_and_unfindable_cluster_fail_in_one_line(tmp_path, monkeypatch):
    """An s3:// workdir (only gs:// URLs are written as URLs) would become a local directory
    `s3:`; FMJAX_DISTRIBUTED=auto off a cluster finds no coordinator. Both: one line, exit status
    2, nothing written."""
    proc = run_cli("train", "--workdir", "s3://bucket/run", "--config",
                   REPO / "experiments/mnist1d/cnn.py", check=False, cwd=tmp_path)
    _assert_clean_failure(proc, tmp_path / "s3:",
                          "fmjax workdirs are filesystem paths or gs:// URLs")
    monkeypatch.setenv("FMJAX_DISTRIBUTED", "auto")
    proc = run_cli("train", "--workdir", tmp_path / "w", *CNN, check=False)
    _assert_clean_failure(proc, tmp_path / "w", "FMJAX_DISTRIBUTED=auto")


def test_unknown_model_key_in_an_experiment_file(tmp_path):
    experiment = tmp_path / "typo.py"
    experiment.write_text(
        "from fmjax import configs\n"
        "def get_config():\n"
        "    return configs.experiment(model=dict(name='mlp', hiden_size=3),\n"
        "                              data=dict(name='mnist1d'))\n")
    proc = run_cli("train", "--config", experiment, "--workdir", tmp_path / "w", check=False)
    _assert_clean_failure(proc, tmp_path / "w", "unknown key config.model.hiden_size",
                          "hidden_size")


def test_checkpoint_that_does_not_fit_the_config(trained_workdir):
    ckpt = trained_workdir / "checkpoints"
    before = {p: p.stat().st_mtime_ns for p in ckpt.rglob("*")}
    proc = run_cli("train", "--config", "experiments/mnist1d/cnn.py", "--workdir", trained_workdir,
                   "--config.model.features=16", *TINY, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "does not fit the config" in lines[0] and "conv_0" in lines[0], lines[0]
    assert {p: p.stat().st_mtime_ns for p in ckpt.rglob("*")} == before


def test_sample_needs_a_generative_model(trained_workdir):
    proc = run_cli("sample", "--workdir", trained_workdir, "--prompt", "x", check=False)
    assert proc.returncode == 2 and "generates nothing to sample" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command, name", [("eval", "config.json"), ("sample", "config.json"),
                                           ("sample", "data_info.json")])
def test_a_truncated_run_file_is_one_line(trained_workdir, tmp_path, command, name):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    text = (workdir / name).read_text()
    (workdir / name).write_text(text[:len(text) // 2])
    proc = run_cli(command, "--workdir", workdir, "--out", tmp_path / "x.png", check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"fmjax: error: {workdir / name} is damaged (the run's ")
    assert "not valid JSON" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
