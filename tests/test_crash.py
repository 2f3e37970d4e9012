"""Crash at any moment: `fmjax train` is killed with SIGKILL six times (inside a device call, an
async checkpoint commit and an eval, and at three random moments) and restarted each time. Every
restart resumes from the last complete checkpoint (never a partial one), and the finished run's
parameters and metrics.jsonl are bit-identical to those of a run that never stopped.

TensorBoard event files keep what a killed run wrote after its last checkpoint; the restarted run
opens its writer with `purge_step`, so TensorBoard drops those points when it reads the files.
"""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import REPO
from fmjax import runs
from test_train import model_metrics
from crash_child import PAUSE_SECONDS

NUM_STEPS = 120
FLAGS = ["--config", "experiments/mnist1d/mlp.py", "--config.model.dropout_rate=0.1",
         f"--config.train.num_steps={NUM_STEPS}", "--config.train.steps_per_call=2",
         "--config.train.log_every=2", "--config.train.eval_every=20",
         "--config.checkpoint.every=10", "--config.checkpoint.keep=2", "--noprogress"]
PHASE_EVERY = {"call": 2, "eval": 20, "commit": 10}   # the steps at which each phase happens
# Where each kill aims: inside that phase (held open PAUSE_SECONDS) at one of its next two steps,
# or "any": a random moment within 0.3 s of one of the next ten device calls, wherever the loop
# (or Orbax's background commit) then is. The steps and delays come from a seeded RNG; the run
# never gets near its end before the last kill (each restart goes back to a checkpoint).
KILLS = ("call", "commit", "eval", "any", "any", "any")
TMP = ".orbax-checkpoint-tmp"


def committed_steps(workdir) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) \
        if directory.is_dir() else []


def partial_steps(workdir) -> list[int]:
    """Steps whose checkpoint Orbax began but never committed (temporary directories)."""
    directory = workdir / "checkpoints"
    return sorted(int(p.name.split(".")[0]) for p in directory.iterdir() if TMP in p.name) \
        if directory.is_dir() else []


def read_events(path) -> list[tuple[str, int]]:
    """crash_child.py's (phase, step) lines; a line the kill tore in mid-write is skipped."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [(kind, int(step)) for kind, _, step in (line.partition(" ") for line in lines)
            if step.isdigit()]


def open_phases(events) -> dict[str, int]:
    """{phase: step} of the phases entered and not left."""
    inside = {}
    for kind, step in events:
        if kind.endswith("_end"):
            inside.pop(kind[:-4], None)
        else:
            inside[kind] = step
    return inside


def start(workdir, events, pause: str, log) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "crash_child.py"), str(events), pause, "--",
         "train", "--workdir", str(workdir), *FLAGS],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(proc, events, wanted: tuple[str, int], timeout: float = 120) -> bool:
    """Poll until `wanted` is among the events; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted in read_events(events):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"no {wanted} within {timeout} s")


def test_sigkill_at_any_moment_then_resume_is_exact(tmp_path):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    with open(tmp_path / "straight.log", "w") as log:
        assert start(straight, tmp_path / "straight.events", "none", log).wait() == 0

    rng = np.random.default_rng(0)
    landed = []   # per kill: (aim, {phase: step} open when it landed, committed step it left)
    for attempt, aim in enumerate(KILLS):
        before = committed_steps(crashed)
        resume_from = before[-1] if before else 0
        phase = "call" if aim == "any" else aim
        every = PHASE_EVERY[phase]
        candidates = [s for s in range(every, NUM_STEPS + 1, every) if s > resume_from]
        target = int(candidates[rng.integers(min(2 if aim != "any" else 10, len(candidates)))])
        pause = "none" if aim == "any" else f"{phase}:{target}"
        events, log_path = tmp_path / f"kill{attempt}.events", tmp_path / f"kill{attempt}.log"
        with open(log_path, "w") as log:
            proc = start(crashed, events, pause, log)
            reached = wait_for(proc, events, (phase, target))
            time.sleep(rng.uniform(0, 0.3 if aim == "any" else PAUSE_SECONDS / 4))
            killed = reached and proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        output = log_path.read_text()
        assert killed or proc.returncode == 0, output[-3000:]
        if before:   # the restart took the newest complete checkpoint
            assert f"resuming from the checkpoint at step {resume_from}" in output, output[-3000:]
        if not killed:
            landed.append((aim, "finished", None))
            continue
        inside = open_phases(read_events(events))
        after = committed_steps(crashed)
        landed.append((aim, inside, after[-1] if after else 0))
        if aim != "any":
            assert inside.get(aim) == target, (aim, target, read_events(events)[-5:])
        if "commit" in inside:   # an interrupted commit leaves a partial, invisible directory
            step = inside["commit"]   # (unless the kill fell between its rename and our note)
            assert (step in partial_steps(crashed)) != (step in after), (step, after)
            assert aim != "commit" or step not in after

    resume_from = committed_steps(crashed)[-1]
    with open(tmp_path / "final.log", "w") as log:
        assert start(crashed, tmp_path / "final.events", "none", log).wait() == 0
    assert (f"resuming from the checkpoint at step {resume_from}"
            in (tmp_path / "final.log").read_text())
    print("kills (aim, phases open when it landed, newest complete checkpoint):", *landed, sep="\n")

    assert sum(inside != "finished" for _, inside, _ in landed) >= 3
    hit = {phase for _, inside, _ in landed if inside != "finished" for phase in inside}
    assert {"call", "commit", "eval"} <= hit, landed
    assert committed_steps(crashed) == committed_steps(straight) and not partial_steps(crashed)
    expected, got = runs.load(straight), runs.load(crashed)
    assert got.step == expected.step == NUM_STEPS
    jax.tree.map(np.testing.assert_array_equal, jax.device_get((got.params, got.extra)),
                 jax.device_get((expected.params, expected.extra)))
    assert model_metrics(crashed) == model_metrics(straight)


def test_resume_drops_metrics_after_the_checkpoint_and_a_torn_last_line(tmp_path):
    """A kill in mid-write can leave half a record: the restarted run drops it with the records
    newer than its checkpoint, so metrics.jsonl reads back whole."""
    from fmjax.metrics.writers import MetricWriters, read_jsonl
    lines = [f'{{"step": {s}, "train/loss": {1 / s}}}' for s in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 40, "train/lo')
    MetricWriters(tmp_path, 20, 100, show_progress=False).close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [10, 20]
