"""`fmjax plot` and what it reads: a classifier's eval details written at each eval (agreeing
with its logged metrics), its confusion matrix and ROC as TensorBoard images, and every kind of
picture drawn from one short real run (an MNIST-1D MLP, 40 steps, evals at 20 and 40, with a
validation split)."""

import io
import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import read_metrics, run_cli, tensorboard_events
from fmjax import configs, plots
from fmjax.errors import UserError
from fmjax.metrics import eval_details
from fmjax.plots.workdirs import named_runs
from fmjax.train import train_and_evaluate

EVAL_STEPS = (20, 40)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("plots") / "mlp"
    config = configs.experiment(
        model=dict(name="mlp", hidden_size=32), data=dict(name="mnist1d", validation_fraction=0.1),
        train=dict(num_steps=40, batch_size=32, eval_batch_size=200, log_every=10,
                   eval_every=20, steps_per_call=10),
        optimizer=dict(name="adam", learning_rate=3e-3), checkpoint=dict(every=40, keep=1))
    train_and_evaluate(config, workdir, show_progress=False)
    return workdir


def _png(path_or_bytes) -> np.ndarray:
    """The picture as an array, after checking it is a whole PNG with something drawn in it."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    pixels = np.asarray(image.convert("RGB"), np.float32)
    assert pixels.std() > 10, "a blank picture"
    return pixels


def test_eval_details_agree_with_the_logged_metrics(run):
    records = {r["step"]: r for r in read_metrics(run) if "eval/loss" in r}
    info = json.loads((run / "data_info.json").read_text())
    assert sorted(records) == list(EVAL_STEPS) == eval_details.steps(run, "eval") \
        == eval_details.steps(run, "val")
    for step in EVAL_STEPS:
        for split, size in (("eval", info["num_eval"]), ("val", info["num_val"])):
            details = eval_details.read(run, split, step)
            assert (details["step"], details["split"], details["num_classes"]) == (step, split, 10)
            counts = np.asarray(details["confusion"])
            assert counts.sum() == size > 0
            assert np.trace(counts) / size == pytest.approx(records[step][f"{split}/accuracy"],
                                                            abs=1e-12)
            aucs = [roc["auc"] for roc in details["roc"]]
            assert np.mean(aucs) == pytest.approx(records[step][f"{split}/roc_auc_ovr"], abs=1e-6)
            for roc in details["roc"]:
                fpr, tpr = np.asarray(roc["fpr"]), np.asarray(roc["tpr"])
                assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
                assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
            for pr in details["pr"]:
                assert 0 < pr["average_precision"] <= 1 and pr["recall"][-1] == 1


def test_tensorboard_gets_the_confusion_matrix_roc_and_config(run):
    events = tensorboard_events(run / "tensorboard")
    images = {(v.tag, e.step): v.image for e in events for v in e.summary.value
              if v.HasField("image")}
    for step in EVAL_STEPS:
        confusion = images[("eval/confusion_matrix", step)]
        roc = images[("eval/roc", step)]
        assert (confusion.width, confusion.height, roc.width, roc.height) == (250, 250, 256, 256)
        _png(confusion.encoded_image_string)
        _png(roc.encoded_image_string)
    text_tags = {v.tag for e in events for v in e.summary.value}
    assert "config/text_summary" in text_tags


def test_a_run_given_as_dot_is_named_by_its_directory(run, tmp_path, monkeypatch):
    monkeypatch.chdir(run)
    fig = plots.figure("roc", ["."])
    assert fig.axes[0].get_title().startswith("mlp, eval at step 40: ROC")
    other = shutil.copytree(run, tmp_path / "other")
    fig = plots.figure("curves", [".", other], plots.PlotOptions(metrics=("eval/loss",)))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "mlp eval", "other eval"]


@pytest.mark.parametrize("kind", ["curves", "roc", "pr", "confusion"])
def test_each_kind_draws_a_png(run, tmp_path, kind):
    out = plots.save(plots.figure(kind, [run]), tmp_path / f"{kind}.png")
    pixels = _png(out)
    assert pixels.shape[1] >= 600 and pixels.shape[0] >= 300
    assert 10_000 < out.stat().st_size < 300_000


def test_curves_of_two_runs_share_panels(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    fig = plots.figure("curves", [run, other], plots.PlotOptions(metrics=(
        "train/loss", "val/loss", "train/loss")))   # named twice, drawn once
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert ax.get_title() == "loss" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "mlp train", "mlp val", "other train", "other val"]
    steps, losses = ax.get_lines()[0].get_data()
    assert list(steps) == [10, 20, 30, 40]
    assert list(losses) == [r["train/loss"] for r in read_metrics(run) if "train/loss" in r]


def test_a_sweep_stands_for_its_trials(run, tmp_path):
    sweep = tmp_path / "sweep"
    for trial in ("0000", "0001"):
        shutil.copytree(run, sweep / "trials" / trial)
    (sweep / "sweep.json").write_text("{}")
    (sweep / "trials" / "0002").mkdir()   # a running sweep's trial that has not logged yet
    shutil.copy(run / "config.json", sweep / "trials" / "0002")
    fig = plots.figure("curves", [sweep], plots.PlotOptions(metrics=("eval/accuracy",)))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "sweep/0000 eval", "sweep/0001 eval"]
    with pytest.raises(UserError, match="holds a sweep, not a run: give one of its trials"):
        plots.figure("roc", [sweep])
    shutil.copytree(sweep, tmp_path / "copy" / "sweep")   # the same name: every trial still drawn
    fig = plots.figure("curves", [sweep, tmp_path / "copy" / "sweep"],
                       plots.PlotOptions(metrics=("eval/accuracy",)))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "sweep/0000 eval", "sweep/0001 eval", f"{tmp_path / 'copy' / 'sweep'}/0000 eval",
        f"{tmp_path / 'copy' / 'sweep'}/0001 eval"]


def test_every_run_is_drawn_once_whatever_the_names(run, tmp_path, monkeypatch):
    """Three runs named cnn: the first by its name, the second by its path, the third (whose path
    is the name taken first) numbered; a run given twice is drawn once."""
    for parent in ("a", "b", "."):
        shutil.copytree(run, tmp_path / parent / "cnn")
    monkeypatch.chdir(tmp_path)
    given = [pathlib.Path(p) for p in ("a/cnn", "b/cnn", "cnn", "a/cnn", "./a/cnn")]
    assert named_runs(given) == {
        "cnn": given[0], "b/cnn": given[1], "cnn (2)": given[2]}


def test_bad_input_is_one_readable_error(run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "sweep" / "trials" / "0000").mkdir(parents=True)
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    (tmp_path / "unlogged").mkdir()
    shutil.copy(run / "config.json", tmp_path / "unlogged")
    cases = [
        ("curves", [run, tmp_path / "unlogged"], {}, f"{tmp_path / 'unlogged'} has no "
         "metrics.jsonl: the run has logged nothing yet"),
        ("roc", [tmp_path / "missing"], {}, f"{tmp_path / 'missing'} does not exist"),
        ("roc", [tmp_path / "empty"], {}, f"{tmp_path / 'empty'} holds no fmjax run (no "
         "config.json)"),
        ("roc", [run, run], {}, "--kind roc draws one run; got 2 directories"),
        ("pr", [run], {"step": 30}, f"{run} has no eval details of step 30; evaluated steps: "
         "20, 40"),
        ("curves", [run], {"metrics": ("eval/acc",)}, "no run logged the metric eval/acc; "
         "they logged: train/accuracy, train/grad_norm, train/learning_rate, train/loss, "
         "eval/accuracy, eval/f1_macro, eval/loss, eval/precision_macro, eval/recall_macro, "
         "eval/roc_auc_ovr, val/accuracy, val/f1_macro, val/loss, val/precision_macro, "
         "val/recall_macro, val/roc_auc_ovr, perf/..."),
        ("curves", [run], {"metrics": ("perf/nope",)}, "no run logged the metric perf/nope; "
         "they logged: " + ", ".join(sorted({k for r in read_metrics(run) for k in r
                                             if k.startswith("perf/")}))),
        ("curves", [tmp_path / "sweep"], {}, f"{tmp_path / 'sweep'} is a sweep none of whose "
         "trials has logged yet"),
        ("violin", [run], {}, "unknown plot kind 'violin'; choose one of curves, roc, pr, "
         "confusion, attention, latent"),
        ("curves", [], {}, "give at least one run directory to plot"),
        ("curves", [run], {"step": 20}, "--step does not apply to --kind curves (it reads "
         "--metrics)"),
        ("roc", [run], {"input": "x"}, "--input does not apply to --kind roc (it reads --step, "
         "--split)"),
        ("latent", [run], {"example": 3}, "--example does not apply to --kind latent (it reads "
         "--step, --split)"),
    ]
    for kind, workdirs, options, message in cases:
        with pytest.raises(UserError) as e:
            plots.figure(kind, workdirs, plots.PlotOptions(**options))
        assert str(e.value) == message
    shutil.copytree(run, tmp_path / "overwritten")
    details_file = eval_details.path(tmp_path / "overwritten", "eval", 40)
    good = json.loads(details_file.read_text())
    for text, reason in [
            ("[1, 2]", "not a JSON object with split, step, num_classes, confusion, roc, pr"),
            ('{"step": 40, "split": "eval"}',
             "not a JSON object with split, step, num_classes, confusion, roc, pr"),
            ('{"step": 40, "confu', "not valid JSON: Unterminated string starting at (line 1, "
             "column 14)"),
            (json.dumps({**good, "confusion": "x"}), "its confusion cannot be drawn "
             "(ValueError: could not convert string to float: np.str_('x'))")]:
        details_file.write_text(text)
        with pytest.raises(UserError) as e:
            plots.figure("confusion", [tmp_path / "overwritten"])
        assert str(e.value) == (f"{details_file} is damaged (the eval details of step 40): "
                                f"{reason}; restore it from a copy or use a new workdir")
    shutil.copytree(run, tmp_path / "old", ignore=shutil.ignore_patterns("eval_details"))
    with pytest.raises(UserError, match=r"has no eval details \(eval_details/eval_\*\.json\): "
                       "the run is not a classifier, predates them, or has not evaluated yet"):
        plots.figure("confusion", [tmp_path / "old"])
    (tmp_path / "empty.png").mkdir()
    for out, message in [(tmp_path / "a.jpg", f"--out {tmp_path / 'a.jpg'} must name a .png "
                          "file"),
                         (tmp_path / "no" / "a.png", f"--out {tmp_path / 'no' / 'a.png'}: its "
                          f"directory {tmp_path / 'no'} does not exist"),
                         (tmp_path / "empty.png", f"--out {tmp_path / 'empty.png'} is a "
                          "directory; name the .png file to write in it"),
                         (run / "config.json" / "a.png", f"--out {run / 'config.json' / 'a.png'}: "
                          f"its directory {run / 'config.json'} is not a directory")]:
        with pytest.raises(UserError) as e:
            plots.check_out(out)
        assert str(e.value) == message


def test_an_unwritable_out_is_one_error_and_leaves_nothing(run, tmp_path, monkeypatch):
    """A read-only directory (simulated at the rename: the tests may run as root, who may write
    anywhere); the real write_atomic runs, so its temporary file must be cleaned up too."""
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))
    monkeypatch.setattr(plots.workdir_files.os, "replace", refuse)
    with pytest.raises(UserError) as e:
        plots.save(plots.figure("confusion", [run]), tmp_path / "c.png")
    assert str(e.value) == f"cannot write --out {tmp_path / 'c.png'}: Permission denied"
    assert list(tmp_path.iterdir()) == []


def test_damaged_metrics_lines_are_left_out_like_torn_ones(run, tmp_path):
    damaged = shutil.copytree(run, tmp_path / "damaged")
    with open(damaged / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 50, "train/lo\n\xff\xfe\n[1, 2]\n{"train/loss": 1.0}\n')
    fig = plots.figure("curves", [damaged], plots.PlotOptions(metrics=("train/loss",)))
    assert list(fig.axes[0].get_lines()[0].get_data()[0]) == [10, 20, 30, 40]
    (damaged / "metrics.jsonl").unlink()
    (damaged / "metrics.jsonl").mkdir()
    with pytest.raises(UserError, match=r"^cannot read \S+/metrics.jsonl \(the run's metrics\): "
                       "Is a directory$"):
        plots.figure("curves", [damaged])


def test_cli_writes_the_png_or_one_error_line(run, tmp_path):
    out = tmp_path / "confusion.png"
    out.write_bytes(b"an old picture")   # replaced
    proc = run_cli("plot", run, "--kind", "confusion", "--step", "20", "--out", out)
    assert proc.stdout == f"wrote {out}: confusion of {run}\n" and proc.stderr == ""
    _png(out)
    proc = run_cli("plot", run, "--kind", "roc", "--split", "val", "--step", "7", "--out",
                   tmp_path / "roc.png", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"fmjax: error: {run} has no val details of step 7; evaluated steps: "
                           "20, 40\n")
    assert not (tmp_path / "roc.png").exists()
