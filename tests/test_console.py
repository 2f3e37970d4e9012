"""What training shows on the console: a live progress bar on a terminal or in a notebook
(`tqdm.auto`'s widget), and elsewhere (a nohup log, a pipe) or with show_progress=False one plain
line per logged step (step, loss, steps/s, ETA without the compile time) and per eval."""

import io
import sys

import pytest
from tqdm import autonotebook

from fmjax.metrics import writers
from fmjax.metrics.writers import MetricWriters

PLAIN = ["step 10/100: loss 0.5, 2 steps/s, ETA 0:00:45",    # only the first call's own rate
         "step 20/100: loss 0.25, 10 steps/s, ETA 0:00:08",   # 10 steps in the 1 s since it
         "step 20/100: eval/accuracy 0.875, eval/loss 0.3"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _log_two_steps(workdir, show_progress: bool, monkeypatch) -> None:
    """Two fetched device calls (steps 10 and 20, one second apart), each logged."""
    now = [100.0]
    monkeypatch.setattr(writers.time, "perf_counter", lambda: now[0])
    metric_writers = MetricWriters(workdir, 0, 100, show_progress)
    metric_writers.advance(10)
    metric_writers.write(10, {"train/loss": 0.5, "perf/steps_per_sec": 2.0})
    now[0] = 101.0
    metric_writers.advance(20)
    metric_writers.write(20, {"train/loss": 0.25, "perf/steps_per_sec": 10.0,
                              "eval/accuracy": 0.875, "eval/loss": 0.3})
    metric_writers.close()


@pytest.mark.parametrize("terminal, notebook, show_progress, bar", [
    (False, False, True, False),    # a log file: lines, whatever the flag
    (False, False, False, False),
    (True, False, True, True),      # a terminal: the bar
    (True, False, False, False),    # --noprogress
    (False, True, True, True),      # a notebook: the widget (tqdm.auto)
])
def test_a_bar_where_it_is_seen_live_else_plain_lines(tmp_path, monkeypatch, capsys, terminal,
                                                     notebook, show_progress, bar):
    stdout = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    if notebook:
        monkeypatch.setattr(autonotebook, "tqdm", type("NotebookTqdm", (), {}))
    _log_two_steps(tmp_path, show_progress, monkeypatch)
    lines = stdout.getvalue().splitlines()
    if bar:   # the bar (on stderr) shows the steps; the eval's results still get their line
        assert lines == PLAIN[2:]
        assert "20/100" in capsys.readouterr().err
    else:
        assert lines == PLAIN
        assert capsys.readouterr().err == ""
