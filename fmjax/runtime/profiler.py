"""`train.profile_steps=(START, STOP)`: a `jax.profiler` trace of a few train steps, written to
`WORKDIR/profile/plugins/profile/<time>/<host>.xplane.pb`, which XProf opens (`xprof --logdir
WORKDIR/profile`).

The trace holds the steps after START up to STOP (the steps `metrics.jsonl` logs as START + 1 ..
STOP). A device call runs up to `train.steps_per_call` fused steps, so the trace starts and stops
on call boundaries: it holds every call that runs any of those steps, whole (the window rounded
out to the calls' ends), and waits for the last one's device work before it stops. A
window from 0 includes the first call's compilation; one that ends past `train.num_steps` stops
with training. Every process traces its own devices. In a gs:// workdir the trace is written to a
local temporary directory first and copied there when it stops (the profiler writes through its
own file layer, not etils.epath).
"""

import contextlib
import pathlib
import tempfile

import jax

from fmjax.runtime import workdir_files

PROFILE_DIR = "profile"


class ProfileWindow:
    """Starts and stops one trace around the device calls that run steps START + 1 .. STOP."""

    def __init__(self, steps: tuple[int, ...], log_dir: pathlib.Path):
        self.start, self.stop_at = steps or (0, 0)   # (0, 0): no step is in the window
        self.log_dir = log_dir
        self.tracing = False
        self._staging = None   # a local temporary directory, for a gs:// log_dir

    @contextlib.contextmanager
    def call(self, step: int, num_steps: int):
        """Around the device call that runs steps `step` + 1 .. `step` + `num_steps`: starts the
        trace when the call runs a step of the window, and marks the call as one step in the
        trace (XProf's step-time breakdown uses it)."""
        if not self.tracing and step < self.stop_at and step + num_steps > self.start:
            jax.profiler.start_trace(str(self._local_dir()))
            self.tracing = True
        if not self.tracing:
            yield
            return
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            yield

    def called(self, step: int, outputs) -> None:
        """After the call that ended at `step`: stops the trace once the window is over."""
        if self.tracing and step >= self.stop_at:
            jax.block_until_ready(outputs)
            self.stop()

    def stop(self) -> None:
        """Ends the trace, if one is running (also when training ends inside the window)."""
        if self.tracing:
            jax.profiler.stop_trace()
            self.tracing = False
            if self._staging is not None:
                _copy_tree(pathlib.Path(self._staging.name), self.log_dir)
                self._staging.cleanup()
                self._staging = None

    def _local_dir(self) -> pathlib.Path:
        """Where the profiler writes: `log_dir`, or a staging directory for a gs:// one."""
        if not workdir_files.is_url(self.log_dir):
            return self.log_dir
        self._staging = tempfile.TemporaryDirectory(prefix="fmjax-profile-")
        return pathlib.Path(self._staging.name)


def _copy_tree(source: pathlib.Path, target) -> None:
    """Every file under local directory `source` to the same place under `target` (gs://)."""
    for path in source.rglob("*"):
        if path.is_file():
            copy = target / path.relative_to(source).as_posix()
            copy.parent.mkdir(parents=True, exist_ok=True)   # Cloud Storage: nothing to do
            copy.write_bytes(path.read_bytes())


@contextlib.contextmanager
def window(steps: tuple[int, ...], workdir: pathlib.Path):
    """A `ProfileWindow` writing to `workdir/profile/`; the trace is written on the way out
    whatever ends training (the end of the loop, preemption, a NaN)."""
    profile = ProfileWindow(steps, workdir / PROFILE_DIR)
    try:
        yield profile
    finally:
        profile.stop()
