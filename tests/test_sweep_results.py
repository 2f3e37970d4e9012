"""A sweep's results: results.csv, the --report table, PNG plots and TensorBoard hparams, from an
Optuna study (in a journal file, as a sweep keeps it) with a trial in every state."""

import datetime
import json
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from PIL import Image

from conftest import tensorboard_events
from fmjax.errors import UserError
from fmjax.sweep import plots, results

PARAMS = ["optimizer.learning_rate", "train.seed"]
START = datetime.datetime(2026, 1, 1, 12, 0, 0)
# Fake eval records: the best val/accuracy (0.6 at step 100) comes before a worse last eval.
RUNNING_TRIAL_METRICS = [
    {"step": 50, "train/loss": 1.5},
    {"step": 100, "train/loss": 1.2, "val/accuracy": 0.6, "val/loss": 1.1,
     "eval/accuracy": 0.55, "eval/loss": 1.2},
    {"step": 150, "val/accuracy": 0.58, "val/loss": 1.0, "eval/accuracy": 0.5, "eval/loss": 1.3},
]
PRUNED_TRIAL_METRICS = [
    {"step": 100, "val/accuracy": 0.5, "val/loss": 1.2, "eval/accuracy": 0.45, "eval/loss": 1.3},
    {"step": 150, "val/accuracy": 0.45, "val/loss": 1.3, "eval/accuracy": 0.4, "eval/loss": 1.4},
]


def _add(study, state, params, value=None, attrs=None, seconds=None, reports=None):
    distributions = {"optimizer.learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
                     "train.seed": IntDistribution(0, 3)}
    end = None if seconds is None else START + datetime.timedelta(seconds=seconds)
    study.add_trial(FrozenTrial(
        number=0, trial_id=0, state=state, value=value, datetime_start=START,
        datetime_complete=end, params=dict(zip(PARAMS, params)), distributions=distributions,
        user_attrs=attrs or {}, system_attrs={}, intermediate_values=reports or {}))


def _write_metrics(workdir, records):
    workdir.mkdir(parents=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (workdir / "metrics.jsonl").write_text(lines + '{"step": 200, "val/acc')   # torn by a kill


def _final(accuracy, loss, test_accuracy, test_loss, step):
    """The user attrs the sweep stores when a trial completes."""
    return {"best_step": step, "val/accuracy": accuracy, "val/loss": loss,
            "eval/accuracy": test_accuracy, "eval/loss": test_loss}


def make_study(sweep_dir, other_host_dir):
    """Trials 0-5: complete, complete, pruned, failed, running (its workdir on another host),
    waiting; trials 2 and 4 have no final metrics, only their metrics.jsonl."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "study.journal")))
    study = optuna.create_study(study_name="fmjax-sweep", storage=storage, direction="maximize")
    _add(study, TrialState.COMPLETE, [0.001, 0], 0.8, _final(0.8, 0.5, 0.75, 0.6, 200), 12.34)
    _add(study, TrialState.COMPLETE, [0.01, 1], 0.9, _final(0.9, 0.3, 0.85, 0.4, 100), 10)
    # Optuna gives a pruned trial the value of its last report: not its best eval.
    _add(study, TrialState.PRUNED, [0.05, 2], 0.45, seconds=3, reports={100: 0.5, 150: 0.45})
    _add(study, TrialState.FAIL, [0.1, 3], seconds=1)
    _add(study, TrialState.RUNNING, [0.0001, 0], attrs={"workdir": str(other_host_dir)})
    study.enqueue_trial(dict(zip(PARAMS, [0.002, 1])))
    _write_metrics(sweep_dir / "trials" / "0002", PRUNED_TRIAL_METRICS)
    _write_metrics(other_host_dir, RUNNING_TRIAL_METRICS)
    return study


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    study = make_study(sweep_dir, tmp_path_factory.mktemp("host2") / "trials" / "0004")
    (sweep_dir / "sweep.json").write_text(json.dumps(
        {"experiment": "experiments/mnist1d/mlp.py", "overrides": [],
         "sweep": {"method": "random", "metric": {"name": "val/accuracy", "goal": "maximize"}}}))
    notes = results.write_all(study, sweep_dir, "val/accuracy", "maximize", PARAMS)
    return sweep_dir, study, notes


def test_results_csv_has_a_row_per_trial_with_the_metrics_of_its_best_eval(sweep):
    sweep_dir, _, notes = sweep
    assert notes == []
    assert (sweep_dir / "results.csv").read_text() == (
        "trial,state,objective,optimizer.learning_rate,train.seed,"
        "val/accuracy,val/loss,eval/accuracy,eval/loss,best_step,wall_s\n"
        "0,COMPLETE,0.8,0.001,0,0.8,0.5,0.75,0.6,200,12.3\n"
        "1,COMPLETE,0.9,0.01,1,0.9,0.3,0.85,0.4,100,10.0\n"
        "2,PRUNED,0.5,0.05,2,0.5,1.2,0.45,1.3,100,3.0\n"
        "3,FAIL,,0.1,3,,,,,,1.0\n"
        "4,RUNNING,0.6,0.0001,0,0.6,1.1,0.55,1.2,100,\n"
        "5,WAITING,,,,,,,,,\n")
    assert not list(sweep_dir.glob(".*.tmp"))   # written whole: no temp file left


def test_best_eval_takes_the_first_of_equal_values_and_skips_missing_and_nan():
    records = [{"step": 1, "val/loss": math.nan}, {"step": 2, "val/loss": 0.5},
               {"step": 3}, {"step": 4, "val/loss": 0.5}, {"step": 5, "val/loss": 0.7}]
    assert results.best_eval(records, "val/loss", "minimize")["step"] == 2
    assert results.best_eval(records, "val/loss", "maximize")["step"] == 5
    assert results.best_eval(records[:1], "val/loss", "minimize") is None


def _trial_order(text: str) -> list[int]:
    return [int(line.split()[0]) for line in text.splitlines()[2:]]


def test_report_table_is_sorted_by_objective_for_either_goal(sweep):
    sweep_dir, _, _ = sweep
    text = results.table(sweep_dir)   # the objective and its goal from sweep.json
    lines = text.splitlines()
    assert lines[0] == ("6 trials (2 complete, 1 fail, 1 pruned, 1 running, 1 waiting); "
                        "objective: val/accuracy, maximized")
    assert lines[1].split() == ["trial", "state", "objective", "optimizer.learning_rate",
                                "train.seed", "val/loss", "eval/accuracy", "eval/loss",
                                "best_step"]
    assert lines[2].split() == ["1", "COMPLETE", "0.9", "0.01", "1", "0.3", "0.85", "0.4", "100"]
    assert _trial_order(text) == [1, 0, 4, 2, 3, 5]   # no objective yet: last, by number
    assert len({line.index("COMPLETE") for line in lines if "COMPLETE" in line}) == 1  # aligned
    assert _trial_order(results.table(sweep_dir, "val/accuracy", "minimize")) == [2, 4, 0, 1, 3, 5]


def test_report_of_a_directory_without_results_is_one_line(tmp_path):
    (tmp_path / "sweep.json").write_text('{"metric": {"name": "val/loss", "goal": "minimize"}}')
    with pytest.raises(UserError, match=r"results.csv is missing \(the sweep's results\)"):
        results.table(tmp_path)


def test_plots_are_pngs_of_the_completed_trials(sweep):
    sweep_dir, _, _ = sweep
    names = sorted(p.name for p in (sweep_dir / "plots").iterdir())
    assert names == ["optimization_history.png", "parallel_coordinate.png", "slice.png"]
    for name in names:
        with Image.open(sweep_dir / "plots" / name) as image:
            image.verify()
            assert image.format == "PNG" and image.width >= 300 and image.height >= 300


def test_plots_wait_for_two_completed_trials_and_for_matplotlib(tmp_path, monkeypatch):
    study = optuna.create_study(direction="maximize")
    _add(study, TrialState.COMPLETE, [0.01, 1], 0.9, seconds=10)
    assert plots.write(study, tmp_path / "plots", "val/accuracy", PARAMS) == []
    assert not (tmp_path / "plots").exists()
    _add(study, TrialState.COMPLETE, [0.02, 2], 0.8, seconds=10)
    monkeypatch.setattr(optuna.visualization.matplotlib, "is_available", lambda: False)
    assert plots.write(study, tmp_path / "plots", "val/accuracy", PARAMS) == [
        "plots skipped: they need matplotlib (an fmjax dependency): pip install matplotlib"]
    assert not (tmp_path / "plots").exists()


def _plugin_data(value):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    assert value.metadata.plugin_data.plugin_name == "hparams"
    return HParamsPluginData.FromString(value.metadata.plugin_data.content)


def _values(directory) -> dict:
    """{tag: (step, Summary.Value)} of the event files in `directory`."""
    return {v.tag: (e.step, v) for e in tensorboard_events(directory) for v in e.summary.value}


def test_tensorboard_hparams_show_every_trial_with_params_and_metrics(sweep):
    from tensorboardX.proto.api_pb2 import DataType, Status
    sweep_dir, _, _ = sweep
    hparams_dir = sweep_dir / "hparams"
    experiment = _plugin_data(_values(hparams_dir)["_hparams_/experiment"][1]).experiment
    assert [(h.name, h.type) for h in experiment.hparam_infos] == [
        (key, DataType.DATA_TYPE_FLOAT64) for key in PARAMS]
    assert [m.name.tag for m in experiment.metric_infos] == [
        "val/accuracy", "val/loss", "eval/accuracy", "eval/loss"]
    assert sorted(p.name for p in hparams_dir.iterdir() if p.is_dir()) == [
        f"{n:04d}" for n in range(5)]   # not the waiting trial: no session yet

    best = _values(hparams_dir / "0001")
    start = _plugin_data(best["_hparams_/session_start_info"][1]).session_start_info
    assert {k: v.number_value for k, v in start.hparams.items()} == {
        "optimizer.learning_rate": 0.01, "train.seed": 1.0}
    assert {tag: (step, pytest.approx(v.simple_value)) for tag, (step, v) in best.items()
            if "/" in tag and not tag.startswith("_hparams_")} == {
        "val/accuracy": (100, 0.9), "val/loss": (100, 0.3), "eval/accuracy": (100, 0.85),
        "eval/loss": (100, 0.4)}
    status = {n: _plugin_data(_values(hparams_dir / f"{n:04d}")[
        "_hparams_/session_end_info"][1]).session_end_info.status for n in range(5)}
    assert status == {0: Status.STATUS_SUCCESS, 1: Status.STATUS_SUCCESS,
                      2: Status.STATUS_UNKNOWN, 3: Status.STATUS_FAILURE,
                      4: Status.STATUS_RUNNING}
    # The running trial's best eval so far, read from its metrics.jsonl on the other host.
    assert _values(hparams_dir / "0004")["val/accuracy"][0] == 100


def test_writing_again_replaces_the_files(sweep):
    sweep_dir, study, _ = sweep
    before = sorted(p.relative_to(sweep_dir) for p in sweep_dir.rglob("*") if p.is_file())
    results.write_all(study, sweep_dir, "val/accuracy", "maximize", PARAMS)
    after = sorted(p.relative_to(sweep_dir) for p in sweep_dir.rglob("*") if p.is_file())
    assert after == before


def test_a_sweep_without_trials_yet_has_a_header_only(tmp_path):
    study = optuna.create_study(direction="minimize")
    assert results.write_all(study, tmp_path, "val/loss", "minimize", PARAMS) == []
    assert (tmp_path / "results.csv").read_text() == (
        "trial,state,objective,optimizer.learning_rate,train.seed,best_step,wall_s\n")
    assert results.table(tmp_path, "val/loss", "minimize").splitlines() == [
        "0 trials; objective: val/loss, minimized",
        "trial  state  objective  optimizer.learning_rate  train.seed  best_step"]
    assert not (tmp_path / "plots").exists()
