"""Where logged metrics go: `metrics.jsonl`, TensorBoard, the console, and optional sinks such
as Weights & Biases (fmjax/metrics/wandb_sink.py).

The console gets a live progress bar where one is seen as one (a terminal, or a notebook through
`tqdm.auto`); elsewhere, as in a `nohup` log, and with `show_progress=False`, it gets one plain
line per logged step (step, loss, steps/s, ETA), flushed at once, and in both cases one line per
eval. All of it goes to stdout, where `fmjax train` prints its final JSON line last.

Only process 0 writes. On resume, lines for steps after the restored checkpoint are dropped from
`metrics.jsonl` (fmjax/metrics/jsonl_file.py), so the file of a resumed run equals that of a run
that never stopped.
"""

import contextlib
import datetime
import json
import math
import re
import sys
import time

import jax
from tqdm.auto import tqdm   # first: it imports autonotebook without its notebook-mode warning
from tqdm import autonotebook, std

from fmjax.errors import WorkdirError
from fmjax.metrics import (classifier_images, eval_details, image_grid, tensorboard_config,
                           tensorboard_files)
from fmjax.metrics.jsonl_file import JsonlFile
from fmjax.runtime import workdir_files

# Keys under this prefix measure the machine, not the model: they differ between identical runs.
PERF_PREFIX = "perf/"


# What tensorboardX imports if it can and fmjax never needs: torch (over a second on machines that
# have it, e.g. Colab) only to accept torch tensors, as fmjax logs floats; Google Cloud Storage's
# client (0.17 CPU s) for gs:// event files, which fmjax writes itself (tensorboard_files.py).
_UNUSED_BY_TENSORBOARDX = ("torch", "google.cloud.storage")


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without `_UNUSED_BY_TENSORBOARDX`."""
    hidden = [name for name in _UNUSED_BY_TENSORBOARDX if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None   # `import name` raises ImportError inside tensorboardX
    try:
        from tensorboardX import SummaryWriter
    finally:
        for name in hidden:
            del sys.modules[name]
    tensorboard_files.register()
    return SummaryWriter


def live_console() -> bool:
    """Whether a progress bar would be seen live: stdout is a terminal, or this is a notebook
    (where `tqdm.auto` draws a widget); not a log file or a pipe."""
    return sys.stdout.isatty() or autonotebook.tqdm is not std.tqdm


def _shown(value) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"


def read_jsonl(path) -> list[dict]:
    """All records of a `metrics.jsonl` file; a line torn by a killed run (which its resume
    drops), or any other line that is no record with a step, is left out, so the file of a
    running or crashed run can be read too. UserError if the file cannot be read."""
    data = workdir_files.read_bytes(path, "the run's metrics")
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class MetricWriters:
    """Writes one record per logged step to every sink; shows step, loss, steps/s and ETA."""

    def __init__(self, workdir, start_step: int, num_steps: int, show_progress: bool = True,
                 sinks=()):
        """`sinks`: more places each record and image grid go (`write`, `write_images` and
        `close`, like `wandb_sink.WandbSink`), on process 0."""
        self.active = jax.process_index() == 0
        self.sinks = list(sinks) if self.active else []
        self.workdir = workdir_files.as_path(workdir)
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self.num_steps = num_steps
        self.jsonl = None
        self.tensorboard = None
        self.progress = None   # a tqdm bar, or None: plain lines
        self._last = (start_step, time.perf_counter())   # every process measures its throughput
        # (step, time) of the first and the latest fetched call: the ETA leaves compiling out.
        self._rate_start = self._reached = None
        if not self.active:
            return
        self.jsonl = JsonlFile(self.jsonl_path, start_step)
        self.tensorboard = summary_writer_class()(str(self.workdir / "tensorboard"),
                                         purge_step=start_step + 1 if start_step else None)
        if show_progress and live_console():
            self.progress = tqdm(total=num_steps, initial=start_step, unit="step",
                                 dynamic_ncols=True, mininterval=1.0)

    def steps_per_sec(self, step: int) -> float:
        """Throughput since the previous call."""
        last_step, last_time = self._last
        now = time.perf_counter()
        self._last = (step, now)
        return (step - last_step) / max(now - last_time, 1e-9)

    def write(self, step: int, record: dict) -> None:
        if not self.active or not record:
            return
        record = {k: (float(v) if not isinstance(v, str) else v) for k, v in record.items()}
        try:
            self.jsonl.append(json.dumps({"step": step, **record}) + "\n")
        except OSError as e:
            raise WorkdirError(f"cannot write the metrics of step {step} to {self.jsonl_path}: "
                               f"{e.strerror or e}; training stopped") from e
        for key, value in record.items():
            if isinstance(value, float) and math.isfinite(value):
                self.tensorboard.add_scalar(key, value, step)
        for sink in self.sinks:
            sink.write(step, record)
        if self.progress is not None:
            self.progress.set_postfix({k.split("/")[-1]: _shown(v) for k, v in record.items()
                                       if k in ("train/loss", "eval/loss", "eval/accuracy")},
                                      refresh=False)
        elif "train/loss" in record:
            self.message(self._train_line(step, record))
        evals = [f"{k} {_shown(v)}" for k, v in record.items()
                 if k.startswith(("eval/", "val/"))]
        if evals:
            self.message(f"step {step}/{self.num_steps}: {', '.join(evals)}")

    def _train_line(self, step: int, record: dict) -> str:
        """`step S/N: loss L, R steps/s, ETA H:MM:SS`, the way big_vision and MaxText log."""
        line = f"step {step}/{self.num_steps}: loss {_shown(record['train/loss'])}"
        if "perf/steps_per_sec" not in record or self._reached is None:
            return line
        steps_per_sec = record["perf/steps_per_sec"]
        (first_step, first_time), (reached, now) = self._rate_start, self._reached
        if reached > first_step:   # the average since the first call: no compile time in it
            steps_per_sec = (reached - first_step) / max(now - first_time, 1e-9)
        eta = datetime.timedelta(seconds=round((self.num_steps - reached) / steps_per_sec))
        return f"{line}, {record['perf/steps_per_sec']:.3g} steps/s, ETA {eta}"

    def write_images(self, step: int, images: dict, scale: int | None = None) -> None:
        """Saves each image grid as `workdir/images/{name}_{step:08d}.png` (slashes and other odd
        characters of the name become `_`) and logs it to TensorBoard under `name`.

        Values are uint8 grids [Y, X, C] from `image_grid.make_grid`, or float batches
        [B, Y, X, C] in [0, 1] made into one. Both sinks get the grid scaled up `scale` times
        (default: to `image_grid.MIN_WIDTH` pixels wide at least).
        """
        if not self.active:
            return
        grids = {}
        for name, grid in images.items():
            file_name = re.sub(r"[^\w.-]", "_", name)
            grids[name] = image_grid.save_png(
                self.workdir / "images" / f"{file_name}_{step:08d}.png", grid, scale=scale)
            self.tensorboard.add_image(name, grids[name], step, dataformats="HWC")
        for sink in self.sinks:
            sink.write_images(step, grids)

    def write_eval_details(self, step: int, details_by_split: dict[str, dict]) -> None:
        """Each split's `Task.eval_details` as `eval_details/{split}_{step:08d}.json`
        (fmjax/metrics/eval_details.py), and a classifier's confusion matrix and ROC curves of
        the eval split to TensorBoard as images."""
        if not self.active or not details_by_split:
            return
        eval_details.write(self.workdir, step, details_by_split)
        for name, image in classifier_images.images(details_by_split.get("eval", {})).items():
            self.tensorboard.add_image(name, image, step, dataformats="HWC")

    def write_config(self, step: int, config_dict: dict, metric_tags: list[str]) -> None:
        """The resolved config to TensorBoard, as text and hparams (with `metric_tags`)."""
        if self.active:
            tensorboard_config.write_config(self.tensorboard, config_dict, metric_tags, step)

    def advance(self, step: int) -> None:
        """Training has reached `step` (a device call's results arrived)."""
        self._reached = (step, time.perf_counter())
        self._rate_start = self._rate_start or self._reached
        if self.active and self.progress is not None:
            self.progress.update(step - self.progress.n)

    def message(self, text: str) -> None:
        """One line on stdout, above the progress bar if there is one."""
        if not self.active:
            return
        if self.progress is not None:
            self.progress.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.active:
            if self.progress is not None:
                self.progress.close()
            # A full local disk stops training with the error of the checkpoint or metrics.jsonl
            # write that met it; the last flushes failing too must not hide that error. On gs://
            # the final flush is the only upload of the last second's lines: its failure shows.
            try:
                with contextlib.suppress(*(() if self.jsonl.is_url else (OSError,))):
                    self.jsonl.flush()
                with contextlib.suppress(OSError):
                    self.tensorboard.close()
            finally:   # a sink that fails to close (W&B's network) leaves the files complete
                for sink in self.sinks:
                    sink.close()
