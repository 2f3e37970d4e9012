"""`fmjax sweep`: the sweep file's checks, each worker's devices, and real sweeps of tiny MNIST-1D
MLP trials: workers, budget, failures, and a sweep stopped by SIGTERM and killed by SIGKILL that
the same command finishes exactly."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from conftest import REPO, SWEEPS, assert_one_line_error, experiment_config, run_cli
from postgres_server import postgres_url  # noqa: F401 (a fixture)
from fmjax.errors import UserError
from fmjax.sweep import devices, storage, trial_process
from fmjax.sweep import spec as spec_lib

# 20 steps, an eval and a checkpoint every 10: a trial takes a few seconds.
TINY = ["--config", "experiments/mnist1d/mlp.py", "--config.train.num_steps=20",
        "--config.train.eval_every=10", "--config.train.steps_per_call=10",
        "--config.checkpoint.every=10", "--config.train.log_every=10"]


def sweep_file(directory: pathlib.Path, body: str, name: str = "sweep.py") -> pathlib.Path:
    """A sweep file whose get_sweep() returns ConfigDict(dict(BODY))."""
    path = directory / name
    path.write_text("import ml_collections\n\n\ndef get_sweep():\n    return ml_collections."
                    f"ConfigDict(dict({textwrap.dedent(body)}), allow_dotted_keys=True)\n")
    return path


GRID = """method="grid", metric=dict(name="val/accuracy", goal="maximize"),
          parameters={"optimizer.learning_rate": dict(values=[1e-2, 1e30]),
                      "data.validation_fraction": dict(value=0.1)}"""


def study_of(sweep_dir: pathlib.Path) -> optuna.Study:
    return optuna.load_study(study_name=storage.STUDY_NAME, storage=storage.journal(sweep_dir))


# ---- The sweep file. ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_config():
    """The MNIST-1D MLP with a validation split (as if --config.data.validation_fraction=0.1)."""
    config = experiment_config("experiments/mnist1d/mlp.py")
    config.data.validation_fraction = 0.1
    return config


def test_spec_reads_the_wandb_shape(tmp_path, mlp_config):
    path = sweep_file(tmp_path, """method="bayes", metric=dict(name="val/loss", goal="minimize"),
        num_trials=5, seed=3, early_terminate=dict(type="hyperband", min_iter=2),
        parameters={"optimizer.learning_rate": dict(distribution="log_uniform", min=1e-4,
                                                    max=1e-1),
                    "model.hidden_size": dict(distribution="int_uniform", min=32, max=128),
                    "train.seed": dict(values=[0, 1]), "train.num_steps": dict(value=50),
                    "train.eval_every": dict(value=10)}""")
    spec = spec_lib.load(str(path), mlp_config)
    assert (spec.method, spec.metric, spec.mode, spec.num_trials, spec.seed) == (
        "bayes", "val/loss", "min", 5, 3)
    assert spec.constants == {"train.num_steps": 50, "train.eval_every": 10}
    assert spec.params == (   # in the ConfigDict's order: sorted
        spec_lib.Param("model.hidden_size", distribution="int_uniform", low=32, high=128),
        spec_lib.Param("optimizer.learning_rate", distribution="log_uniform", low=1e-4, high=1e-1),
        spec_lib.Param("train.seed", values=(0, 1)))
    assert spec.early_terminate == dict(type="hyperband", min_iter=2, eta=3)


@pytest.mark.parametrize("body, message", [
    ('method="random", num_trials=4, metric=dict(name="val/accuracy", goal="maximize"), '
     'early_terminate=dict(type="median", min_iter=6), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3])}',
     "early_terminate.min_iter=6 evals of train.eval_every=1000 steps reach "
     "train.num_steps=6000: no trial could be pruned; lower min_iter or eval_every, or leave "
     "early_terminate out"),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rat": dict(values=[1e-3])}',
     "parameters['optimizer.learning_rat']: unknown config key 'optimizer.learning_rat': the "
     "experiment's config has no such key"),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(values=[])}',
     "parameters['optimizer.learning_rate']: values is empty: list at least one value"),
    ('method="random", num_trials=4, metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(distribution="uniform", min=0.1, max=0.01)}',
     "parameters['optimizer.learning_rate']: min=0.1 must be below max=0.01"),
    ('method="random", num_trials=4, metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(distribution="log_uniform", min=0.0, max=1.0)}',
     "parameters['optimizer.learning_rate']: log_uniform needs min > 0 (min and max are the "
     "values, not their logs; got min=0.0)"),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"model.hidden_size": dict(values=[64, 0])}',
     "parameters['model.hidden_size']: config.model.hidden_size=0 is out of range: must be an "
     "integer in [1, 2**31 - 1]"),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"model.hidden_size": dict(values=[6.5])}',
     "parameters['model.hidden_size']: model.hidden_size=6.5 does not fit the key: "),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(distribution="uniform", min=0.1, max=1.0)}',
     "parameters['optimizer.learning_rate']: a grid takes values=[...], not a distribution"),
    ('method="grid", num_trials=3, metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3])}',
     "num_trials=3: a grid runs each of its 1 combinations once (leave num_trials out)"),
    ('method="bayes", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3])}',
     "num_trials=None: bayes needs a positive integer"),
    ('method="grid", metric=dict(name="eval/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3]), '
     '"data.validation_fraction": dict(value=0.1)}',
     "the sweep's metric.name='eval/accuracy' reads the eval split of data 'mnist1d', a test "
     "split: model selection must not; use one of: val/"),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3]), '
     '"data.validation_fraction": dict(value=0.0)}',
     "the sweep's metric.name='val/accuracy' needs config.data.validation_fraction > 0"),
    ('method="annealing", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3])}',
     "method='annealing': must be one of grid, random, bayes"),
    ('method="grid", metric=dict(name="val/accuracy", goal="up"), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3])}',
     "metric.goal='up': must be maximize or minimize"),
    ('method="grid", metric=dict(name="val/accuracy", goal="minimize"), '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3])}',
     "metric.goal='minimize' would search for the worst val/accuracy: higher is better; set "
     "goal='maximize'"),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"data.validation_fraction": dict(values=[0.1, 0.0])}',
     "parameters['data.validation_fraction']=0.0: the sweep's metric.name='val/accuracy' needs "
     "config.data.validation_fraction > 0"),
    ('method="grid", metric=dict(name="val/accuracy", goal="maximize"), '
     'parameters={"train.seed": dict(values=list(range(1000))), '
     '"model.hidden_size": dict(values=list(range(1, 1001))), "data.validation_fraction": '
     'dict(value=0.1)}',
     "the grid has 1000000 combinations, more than 100000: search it with method='random' or "
     "'bayes' and a num_trials"),
    ('method="random", num_trials=1, metric="val/accuracy", '
     'parameters={"optimizer.learning_rate": dict(values=[1e-3])}',
     "metric='val/accuracy': must be dict(name=..., goal=maximize|minimize)"),
    ('method="random", num_trials=1, metric=dict(name="val/accuracy", goal="maximize"), '
     'early_terminate="hyperband", parameters={"optimizer.learning_rate": dict(values=[1e-3]), '
     '"data.validation_fraction": dict(value=0.1)}',
     "early_terminate='hyperband': must be dict(type=median|hyperband, min_iter=..., eta=...)"),
])
def test_spec_errors_name_the_file_and_the_problem(tmp_path, mlp_config, body, message):
    path = sweep_file(tmp_path, body)
    with pytest.raises(UserError) as e:
        spec_lib.load(str(path), mlp_config)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def test_a_grid_may_name_its_size(tmp_path, mlp_config):
    path = sweep_file(tmp_path, GRID.replace('method="grid"', 'method="grid", num_trials=2'))
    assert spec_lib.load(str(path), mlp_config).num_trials == 2


def test_a_sweep_without_allow_dotted_keys_is_told_how(tmp_path, mlp_config):
    path = tmp_path / "plain.py"
    path.write_text("import ml_collections\n\n\ndef get_sweep():\n    return ml_collections."
                    "ConfigDict(dict(parameters={'train.seed': dict(values=[0])}))\n")
    with pytest.raises(UserError) as e:
        spec_lib.load(str(path), mlp_config)
    assert str(e.value).endswith("(parameters are dotted config keys: build the ConfigDict with "
                                 "allow_dotted_keys=True)"), str(e.value)
    assert str(e.value).startswith(f"{path}, line 5: get_sweep() raised ValueError: ")


def test_a_failing_sweep_file_names_its_line(tmp_path, mlp_config):
    path = tmp_path / "bad.py"
    path.write_text("def get_sweep():\n    return 1 / 0\n")
    with pytest.raises(UserError, match=rf"^{path}, line 2: get_sweep\(\) raised "
                                        "ZeroDivisionError: division by zero$"):
        spec_lib.load(str(path), mlp_config)


def test_the_sweep_process_takes_no_accelerator_and_its_trials_get_the_environment(tmp_path):
    """With JAX_PLATFORMS=cuda on this CPU machine, a sweep process that started JAX's CUDA
    backend would fail; it runs, and its trial (given JAX_PLATFORMS=cuda) fails on its own."""
    path = sweep_file(tmp_path, GRID.replace(", 1e30", ""))
    env = dict(os.environ, JAX_PLATFORMS="cuda")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "fmjax", "sweep", *TINY, "--sweep", str(path),
                           "--workdir", str(tmp_path / "sweep")], cwd=REPO, env=env, text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (trial,) = study_of(tmp_path / "sweep").get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    alone = subprocess.run([sys.executable, "-m", "fmjax", "train", *TINY, "--workdir",
                            str(tmp_path / "alone")], cwd=REPO, env=env, text=True,
                           capture_output=True)
    assert alone.returncode == 2
    assert alone.stderr.startswith("fmjax: error: JAX cannot start the backend of "
                                   "JAX_PLATFORMS='cuda': ") and alone.stderr.count("\n") == 1
    assert trial.user_attrs["error"] == alone.stderr.strip()


# ---- Devices per worker. -----------------------------------------------------------------------

def test_gpu_workers_get_disjoint_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(devices, "nvidia_gpus", lambda: 4)
    envs = [w.env for w in devices.workers(2, {})]
    assert envs == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    envs = [w.env for w in devices.workers(2, {"CUDA_VISIBLE_DEVICES": "5,7"})]
    assert envs == [{"CUDA_VISIBLE_DEVICES": "5"}, {"CUDA_VISIBLE_DEVICES": "7"}]
    with pytest.raises(UserError, match=r"^--workers=5 but this machine has 4 GPUs: each worker"):
        devices.workers(5, {})


def test_tpu_workers_get_one_chip_and_a_port_each(monkeypatch):
    monkeypatch.setattr(devices, "nvidia_gpus", lambda: 0)
    monkeypatch.setattr(devices, "tpu_chips", lambda: 4)
    envs = [w.env for w in devices.workers(4, {})]
    assert [e["TPU_VISIBLE_CHIPS"] for e in envs] == ["0", "1", "2", "3"]
    assert [e["TPU_PROCESS_PORT"] for e in envs] == ["8476", "8477", "8478", "8479"]
    assert {e["TPU_CHIPS_PER_PROCESS_BOUNDS"] for e in envs} == {"1,1,1"}
    assert {e["TPU_PROCESS_BOUNDS"] for e in envs} == {"1,1,1"}
    two = devices.workers(2, {})
    assert [(w.env["TPU_VISIBLE_CHIPS"], w.env["TPU_CHIPS_PER_PROCESS_BOUNDS"]) for w in two] == [
        ("0,1", "1,2,1"), ("2,3", "1,2,1")]
    with pytest.raises(UserError, match="cannot split this TPU VM's 4 chips"):
        devices.workers(3, {})


def test_cpu_workers_split_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    workers = devices.workers(2, {"JAX_PLATFORMS": "cpu"})
    assert [(w.env, w.cpus) for w in workers] == [({}, (0, 1)), ({}, (2, 3))]
    assert devices.workers(1, {"JAX_PLATFORMS": "cpu"}) == [devices.Worker({})]
    with pytest.raises(UserError, match=r"^--workers=6 but this machine has 5 CPU cores"):
        devices.workers(6, {"JAX_PLATFORMS": "cpu"})


def test_the_child_is_pinned_to_its_cores_and_dies_with_its_parent(tmp_path):
    """fmjax/sweep/child.py: affinity, and PR_SET_PDEATHSIG (checked in /proc)."""
    core = min(os.sched_getaffinity(0))
    code = ("import os; print(sorted(os.sched_getaffinity(0)), "
            "open('/proc/self/status').read().count('\\n') > 0)")
    out = subprocess.run([sys.executable, "-m", "fmjax.sweep.child", str(os.getpid()), str(core),
                          "--", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == f"[{core}] True", out.stderr
    # A parent that is already gone: the child runs nothing.
    out = subprocess.run([sys.executable, "-m", "fmjax.sweep.child", "1", "", "--", "-c",
                          "print('ran')"], cwd=REPO, capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (143, "")


def test_the_trial_command(tmp_path):
    spec = spec_lib.SweepSpec("grid", "eval/accuracy", "maximize", 2, (), {"train.seed": 3}, {}, 0)
    argv = trial_process.command("exp.py:runlocal", ["--config.train.num_steps=20"],
                                 {"optimizer.learning_rate": 0.003}, spec, tmp_path)
    assert argv == ["-m", "fmjax", "train", "--config", "exp.py:runlocal", "--workdir",
                    str(tmp_path), "--noprogress", "--config.train.num_steps=20",
                    "--config.train.seed=3", "--config.optimizer.learning_rate=0.003",
                    "--config.checkpoint.best_metric=eval/accuracy",
                    "--config.checkpoint.best_mode=max"]


@pytest.mark.parametrize("returncode", [0, 130, 143, -signal.SIGTERM, -signal.SIGINT])
def test_a_trial_the_sweep_stops_stays_resumable_however_its_process_ends(tmp_path, returncode):
    """Ctrl-C on a sweep while a trial was exiting: its SIGTERM came after Python had restored
    the default handlers, the process died of it (-15) after printing its results, and the
    finished trial was recorded FAIL with its results line as the error."""
    spec = spec_lib.SweepSpec("grid", "val/accuracy", "maximize", 1, (), {}, {}, 0)
    (tmp_path / "metrics.jsonl").write_text('{"step": 20, "val/accuracy": 0.5}\n')
    (tmp_path / "train.log").write_text('{"val/accuracy": 0.5}\n')
    assert trial_process.outcome(tmp_path, spec, returncode, False, True).state == (
        "complete" if returncode == 0 else "stopped")
    failed = trial_process.outcome(tmp_path, spec, 1, False, True)
    assert (failed.state, failed.error) == ("failed", '{"val/accuracy": 0.5}')


# ---- Real sweeps. ------------------------------------------------------------------------------

def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    good = sweep_file(tmp_path, GRID)
    bad = sweep_file(tmp_path, GRID.replace("learning_rate", "learning_rat"), "bad.py")
    widths = sweep_file(tmp_path, GRID.replace('"optimizer.learning_rate": dict(values=[1e-2, '
                                               '1e30])', '"model.hidden_size": dict(values=[8])'),
                        "widths.py")
    for args, message in [
        ([*TINY, "--sweep", bad], f"fmjax: error: {bad}: parameters['optimizer.learning_rat']: "
         "unknown config key 'optimizer.learning_rat': the experiment's config has no such key\n"),
        ([*TINY, "--sweep", good, "--storage", "postgresql://nobody@127.0.0.1:1/none"],
         "fmjax: error: --storage: cannot reach postgresql://nobody@127.0.0.1:1/none: "
         "OperationalError: (psycopg.OperationalError) connection failed: connection to server "
         "at \"127.0.0.1\", port 1 failed: Connection refused\n"),
        ([*TINY, "--sweep", good, "--storage", "mysql://nobody@127.0.0.1:1/none"],
         "fmjax: error: --storage=mysql://...: its database driver is not installed: pip install "
         "'fmjax[sweep]' (psycopg for postgresql://, PyMySQL for mysql+pymysql://)\n"),
        ([*TINY, "--sweep", good, "--storage", "redis://localhost"],
         "fmjax: error: --storage='redis://localhost': unknown database URL (give "
         "postgresql://..., mysql://... or sqlite:///FILE)\n"),
        ([*TINY, "--sweep", good, "--workers", "999"],
         f"fmjax: error: --workers=999 but this machine has {len(os.sched_getaffinity(0))} CPU "
         "cores: each worker needs at least one\n"),
        ([*TINY, "--sweep", widths, "--vectorize"],
         "fmjax: error: --vectorize: members may differ only in train.seed, "
         "optimizer.learning_rate, optimizer.end_learning_rate, optimizer.b1, optimizer.b2, "
         "optimizer.eps, optimizer.weight_decay, optimizer.momentum, not 'model.hidden_size' "
         "(run the sweep without --vectorize)\n"),
    ]:
        proc = run_cli("sweep", *args, "--workdir", tmp_path / "sweep", check=False)
        assert (proc.returncode, proc.stderr) == (2, message)
        assert not (tmp_path / "sweep").exists()


def test_a_report_before_the_first_trial_ends(tmp_path):
    """--report on a sweep that has started (DIR/sweep.json) but has no results.csv yet was
    'fmjax: error: DIR/results.csv is missing' with exit status 2."""
    spec = spec_lib.SweepSpec("random", "val/accuracy", "maximize", 6, (), {}, {}, 0)
    (tmp_path / "sweep.json").write_text(json.dumps({"sweep": spec.to_json()}))
    proc = run_cli("sweep", "--workdir", tmp_path, "--report")
    assert (proc.stdout, proc.stderr) == (
        "0 trials finished yet (of 6); objective: val/accuracy, maximized\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]


def test_fmjax_train_refuses_a_sweep_directory(tmp_path):
    """`fmjax train --workdir SWEEPDIR` trained a run into the sweep's directory (its
    checkpoints, config.json and metrics.jsonl beside sweep.json and study.journal)."""
    (tmp_path / "sweep.json").write_text("{}")
    proc = run_cli("train", *TINY, "--workdir", tmp_path, check=False)
    assert (proc.returncode, proc.stderr) == (2, f"fmjax: error: --workdir {tmp_path} holds a "
                                                 "sweep (sweep.json), not a run: its trials are "
                                                 "in trials/NNNN; give the run a directory of "
                                                 "its own\n")
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]


def test_a_sweep_workdir_that_is_a_file_or_empty_is_one_line(tmp_path):
    """--workdir FILE (or FILE/sub) was a NotADirectoryError traceback; --workdir= was refused
    only because the current directory was not empty."""
    good = sweep_file(tmp_path, GRID)
    (tmp_path / "afile").write_text("")
    for workdir, message in [
            (tmp_path / "afile", f"{tmp_path / 'afile'} is a file, not a directory"),
            (tmp_path / "afile" / "sub", f"{tmp_path / 'afile'} is a file, not a directory"),
            ("", None)]:
        proc = run_cli("sweep", *TINY, "--sweep", good, f"--workdir={workdir}", check=False)
        expected = (f"fmjax: error: --workdir {workdir}: {message}\n" if message else
                    "fmjax: error: --workdir is empty; give the sweep's directory (fmjax would "
                    "otherwise write into the current one)\n")
        assert (proc.returncode, proc.stderr) == (2, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "sweep.py"]


def test_two_sweeps_started_at_once_on_one_dir_record_one_sweep(tmp_path):
    """Both found no sweep.json; the second overwrote the first's and both ran their own
    sweep in one study. Now the second to write finds the first's and must match it."""
    from fmjax.sweep import command
    record = {"experiment": "a.py", "overrides": [], "storage": None, "vectorize": False,
              "sweep": {"num_trials": 2}}
    command._record(tmp_path, record)
    command._record(tmp_path, dict(record))   # the same sweep: it joins
    with pytest.raises(UserError, match=r"holds a sweep with a different sweep \("):
        command._record(tmp_path, dict(record, sweep={"num_trials": 3}))
    assert json.loads((tmp_path / "sweep.json").read_text()) == record
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]


def test_a_ctrl_c_that_lands_in_a_gc_callback_still_stops_the_sweep(tmp_path):
    """Python raises a signal's KeyboardInterrupt wherever it is, and one raised in a garbage-
    collection callback (JAX registers one) is printed and dropped: a Ctrl-C while the sweep
    started up was lost, and the sweep ran its trials. Here the sweep file sends SIGINT from a
    gc callback while the sweep is checked: it stops, with one line, before writing DIR."""
    path = tmp_path / "sweep.py"
    path.write_text(textwrap.dedent(f"""\
        import gc, os, signal
        import ml_collections


        def get_sweep():
            def callback(phase, info):
                if phase == "start":
                    gc.callbacks.remove(callback)
                    os.kill(os.getpid(), signal.SIGINT)
                    sum(range(1000))   # the handler runs here, in the callback
            gc.callbacks.append(callback)
            gc.collect()
            return ml_collections.ConfigDict(dict({GRID}), allow_dotted_keys=True)
        """))
    proc = run_cli("sweep", *TINY, "--sweep", path, "--workdir", tmp_path / "sweep", check=False)
    assert (proc.returncode, proc.stderr, proc.stdout) == (130, "fmjax: interrupted (SIGINT)\n", "")
    assert not (tmp_path / "sweep").exists()


def test_an_in_memory_sqlite_storage_is_refused(tmp_path):
    """sqlite:/// (in memory) crashed with 'no such table: studies' after creating DIR, and left
    a `.lock` file in the current directory."""
    good = sweep_file(tmp_path, GRID)
    for url in ("sqlite:///", "sqlite:///:memory:"):
        proc = run_cli("sweep", *TINY, "--sweep", good, "--storage", url, "--workdir",
                       tmp_path / "sweep", check=False)
        assert (proc.returncode, proc.stderr) == (2, f"fmjax: error: --storage={url!r}: give the "
                                                     "database file, sqlite:///FILE (sqlite:////"
                                                     "abs/path.db); an in-memory database is "
                                                     "lost at exit and shared by no one\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.py"]
        assert not (REPO / ".lock").exists()


def test_vectorized_trials_equal_the_trials_run_one_by_one(tmp_path):
    """--vectorize: the grid's members train in one process (fmjax/sweep/member_group.py) and
    give the same trials, values and metrics as the sweep run trial by trial."""
    path = sweep_file(tmp_path, GRID.replace("1e30", "3e-3"))
    studies = {}
    for mode in ("one_by_one", "vectorized"):
        flags = ["--vectorize"] if mode == "vectorized" else []
        proc = run_cli("sweep", *TINY, "--sweep", path, "--workdir", tmp_path / mode, *flags,
                       check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        studies[mode] = study_of(tmp_path / mode).get_trials()
    assert "trials 0, 1: started as one vectorised process" in proc.stdout
    for solo, member in zip(*studies.values(), strict=True):
        assert member.state == solo.state == optuna.trial.TrialState.COMPLETE
        assert (member.params, member.value) == (solo.params, solo.value)
        assert {k: v for k, v in member.user_attrs.items() if "/" in k} == \
            {k: v for k, v in solo.user_attrs.items() if "/" in k}
    assert (tmp_path / "vectorized" / "results.csv").exists()


def test_two_workers_spend_the_budget_once_and_a_failed_trial_is_recorded(tmp_path):
    sweep_dir = tmp_path / "sweep"
    path = sweep_file(tmp_path, GRID)
    proc = run_cli("sweep", *TINY, "--sweep", path, "--workdir", sweep_dir, "--workers", 2,
                   check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = {t.number: t for t in study_of(sweep_dir).get_trials()}
    assert sorted(trials) == [0, 1]
    by_lr = {t.params["optimizer.learning_rate"]: t for t in trials.values()}
    good, bad = by_lr[1e-2], by_lr[1e30]
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert good.value == good.user_attrs["val/accuracy"] > 0.2
    assert good.user_attrs["best_step"] in (10, 20)
    assert good.intermediate_values.keys() == {10, 20}
    config = json.loads((sweep_dir / "trials" / f"{good.number:04d}" / "config.json").read_text())
    assert (config["optimizer"]["learning_rate"], config["train"]["num_steps"],
            config["checkpoint"]["best_metric"]) == (1e-2, 20, "val/accuracy")
    assert bad.state == optuna.trial.TrialState.FAIL
    assert bad.user_attrs["error"].startswith("fmjax: error: "), bad.user_attrs
    assert "CPU cores" in proc.stdout
    assert proc.stdout.splitlines()[-1] == (
        f"sweep: 2 of 2 trials (1 complete, 1 fail); best: trial {good.number}, "
        f"val/accuracy={good.value:.4g} (optimizer.learning_rate=0.01)")
    report = run_cli("sweep", "--workdir", sweep_dir, "--report").stdout.splitlines()
    assert report[0] == "2 trials (1 complete, 1 fail); objective: val/accuracy, maximized"
    assert report[2].split()[:3] == [str(good.number), "COMPLETE", f"{good.value:.4g}"]
    # The same command again: nothing more to run.
    again = run_cli("sweep", *TINY, "--sweep", path, "--workdir", sweep_dir, check=False)
    assert again.stdout.splitlines() == proc.stdout.splitlines()[-1:]
    # Another sweep on the same directory is refused.
    other = run_cli("sweep", *TINY, "--config.train.seed=1", "--sweep", path, "--workdir",
                    sweep_dir, check=False)
    assert_one_line_error(other, f"{sweep_dir} holds a sweep with a different overrides")


def _start(*args) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen([sys.executable, "-m", "fmjax", *map(str, args)], cwd=REPO, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sweep never got there"
        time.sleep(0.05)


def _has_eval(workdir: pathlib.Path, step: int):
    """Has the trial in `workdir` logged its eval at `step` (its checkpoint there is saved)?"""
    return lambda: any(r["step"] == step and "val/accuracy" in r
                       for r in trial_process.records(workdir)) and (
        workdir / "checkpoints" / str(step)).is_dir()


def _gone(pid: int) -> bool:
    try:
        return "State:\tZ" in pathlib.Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def test_a_stopped_and_a_killed_sweep_finish_their_budget_exactly(tmp_path):
    """SIGTERM during trial 0, SIGKILL during trial 1 (after trial 0 completed), then the same
    command: two trials, each complete once, each resumed from its own checkpoint, and the
    completed trial's metrics untouched."""
    sweep_dir = tmp_path / "sweep"
    path = sweep_file(tmp_path, GRID.replace("1e30", "3e-3"))
    args = ["sweep", *TINY, "--config.train.num_steps=150", "--sweep", path, "--workdir",
            sweep_dir]
    first, second = sweep_dir / "trials" / "0000", sweep_dir / "trials" / "0001"

    proc = _start(*args)
    _wait_for(_has_eval(first, 10), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err == ("fmjax: preempted (SIGTERM): the running trials saved a checkpoint; run the "
                   "same command again to finish the sweep\n")
    (running,) = study_of(sweep_dir).get_trials()
    assert running.state == optuna.trial.TrialState.RUNNING

    proc = _start(*args)
    _wait_for(_has_eval(second, 10), proc)
    completed = (first / "metrics.jsonl").read_text()
    child = json.loads((second / "fmjax.lock").read_text())["pid"]
    proc.kill()
    proc.wait()
    proc = _start(*args)   # at once: it waits for the trial's process, still saving, to exit
    deadline = time.monotonic() + 60
    while not _gone(child):   # PR_SET_PDEATHSIG: the trial saves a checkpoint and ends
        assert time.monotonic() < deadline, "the trial outlived its sweep"
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trials = study_of(sweep_dir).get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, optuna.trial.TrialState.COMPLETE),
                                                     (1, optuna.trial.TrialState.COMPLETE)]
    assert (first / "metrics.jsonl").read_text() == completed
    for workdir in (first, second):
        log = (workdir / "train.log").read_text()
        assert "resuming from the checkpoint at step" in log, log
        steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text()
                 .splitlines() if "val/accuracy" in line]
        assert steps == list(range(10, 160, 10))
    assert out.splitlines()[0].startswith("trial 1: resumed on all devices: "), out


RANDOM = """method="random", num_trials=3, metric=dict(name="val/accuracy", goal="maximize"),
            parameters={"optimizer.learning_rate": dict(distribution="log_uniform", min=1e-3,
                                                        max=3e-2),
                        "data.validation_fraction": dict(value=0.1)}"""


def test_two_hosts_share_a_postgresql_study_and_its_budget(tmp_path, postgres_url):  # noqa: F811
    """Two sweep processes, each with its own directory (as on two hosts), one PostgreSQL study:
    the budget is spent exactly once, no trial number twice, each trial run where it was taken."""
    path = sweep_file(tmp_path, RANDOM)
    hosts = [tmp_path / "host0", tmp_path / "host1"]
    procs = [_start("sweep", *TINY, "--sweep", path, "--workdir", d, "--storage", postgres_url)
             for d in hosts]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name=storage.STUDY_NAME, storage=postgres_url).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    for t in trials:
        workdir = pathlib.Path(t.user_attrs["workdir"])
        assert workdir.parent.parent in hosts and workdir.name == f"{t.number:04d}"
        assert t.value == max(r["val/accuracy"] for r in trial_process.records(workdir)
                              if "val/accuracy" in r)
    ran = [sorted(p.name for p in (d / "trials").iterdir()) for d in hosts]
    assert sorted(ran[0] + ran[1]) == ["0000", "0001", "0002"]


@pytest.mark.parametrize("sweep, experiment, budget", [
    ("experiments/mnist1d/sweep_mlp.py", "experiments/mnist1d/mlp.py", 24),
    ("experiments/mnist1d/sweep_cnn.py", "experiments/mnist1d/cnn.py", 16),
    ("experiments/shakespeare/sweep_gpt_char.py", "experiments/shakespeare/gpt_char.py:cpu", 9),
])
def test_shipped_sweeps_fit_their_experiments(sweep, experiment, budget):
    path, _, variant = experiment.partition(":")
    spec = spec_lib.load(str(REPO / sweep), experiment_config(path, variant))
    assert spec.num_trials == budget
    assert sweep in SWEEPS


def test_a_shipped_sweep_is_found_by_name(mlp_config):
    assert spec_lib.load("mnist1d/sweep_mlp.py", mlp_config).method == "bayes"


def test_the_command_line_gives_the_experiment_and_overrides_as_typed():
    from fmjax.cli import main
    argv = ["fmjax", "sweep", "--config", "mnist1d/mlp.py:runlocal", "--sweep", "s.py",
            "--config.train.seed=3", "--config.optimizer.learning_rate", "0.1", "--workers=2"]
    assert main.config_args(argv) == ("mnist1d/mlp.py:runlocal", [
        "--config.train.seed=3", "--config.optimizer.learning_rate=0.1"])


def test_early_terminate_counts_evals():
    from fmjax.sweep import runner
    spec = spec_lib.SweepSpec("random", "val/loss", "minimize", 9, (), {},
                              dict(type="hyperband", min_iter=2, eta=3), 0)
    pruner = runner.make_pruner(spec, eval_every=100, num_steps=1000)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (200, 1000, 3)
    median = runner.make_pruner(dataclasses.replace(spec, early_terminate=dict(
        type="median", min_iter=3, eta=3)), eval_every=100, num_steps=1000)
    assert median._n_warmup_steps == 300


def test_a_trial_is_taken_over_only_when_no_live_process_owns_it(tmp_path):
    """runner.Sweep.claim: a RUNNING trial whose owner lock is free (its sweep died), or whose
    claim was cut short (no attrs), is resumed under its number; one whose owner lives is left
    alone; once the study holds the budget, there is nothing to claim."""
    from fmjax.sweep import runner
    spec = spec_lib.SweepSpec("random", "val/loss", "minimize", 3, (
        spec_lib.Param("optimizer.learning_rate", distribution="log_uniform", low=1e-3,
                       high=1e-1),), {}, {}, 0)
    study = optuna.create_study(storage=storage.journal(tmp_path), study_name="s")
    sweep = runner.Sweep(study, spec, tmp_path, "exp.py", [],
                         storage.BudgetLock(None, tmp_path))
    orphan = study.ask()                       # a claim cut short: no attrs
    first = sweep.claim()
    assert (first.trial.number, first.resumed) == (orphan.number, True)
    second = sweep.claim()                     # trial 0 is owned (the lock is held): a new one
    assert (second.trial.number, second.resumed) == (1, False)
    lr = second.params["optimizer.learning_rate"]
    os.close(second.owner_fd)                  # its sweep "dies"
    again = sweep.claim()
    assert (again.trial.number, again.resumed, again.params) == (
        1, True, {"optimizer.learning_rate": lr})
    third = sweep.claim()
    assert third.trial.number == 2 and sweep.claim() is None   # the budget: 3
    assert [t.user_attrs["workdir"] for t in study.get_trials()] == [
        str(tmp_path / "trials" / f"{n:04d}") for n in range(3)]


class _PruneAtOnce(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return bool(trial.intermediate_values)


def test_a_pruned_trial_stops_with_a_checkpoint(tmp_path, monkeypatch):
    """The pruner's verdict after the first eval: the trial process gets SIGTERM, saves a
    checkpoint and ends; the trial is PRUNED with its last eval as its value."""
    from fmjax.sweep import runner
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    spec = spec_lib.SweepSpec("grid", "val/accuracy", "maximize", 1, (
        spec_lib.Param("optimizer.learning_rate", values=(1e-2,)),),
        {"data.validation_fraction": 0.1, "train.num_steps": 2000}, {}, 0)
    study = optuna.create_study(storage=storage.journal(tmp_path), study_name="s",
                                direction="maximize", pruner=_PruneAtOnce())
    sweep = runner.Sweep(study, spec, tmp_path, TINY[1], TINY[2:],
                         storage.BudgetLock(None, tmp_path))
    claim = sweep.claim()
    sweep._run(claim, devices.Worker({}))
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED
    steps = sorted(trial.intermediate_values)   # the first, and any the process made on its way out
    assert steps[0] == 10 and steps[-1] < 2000
    assert trial.value == trial.intermediate_values[steps[-1]]
    log = (tmp_path / "trials" / "0000" / "train.log").read_text()
    assert "preempted (SIGTERM) at step" in log and "checkpoint saved" in log, log
