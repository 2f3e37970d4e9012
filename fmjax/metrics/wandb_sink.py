"""Optional Weights & Biases logging: `config.logging.wandb_project` (`pip install 'fmjax[wandb]'`).

Process 0 logs the resolved config, every metric record `metrics.jsonl` gets and every image grid
to one W&B run. The run's id is kept in `WORKDIR/wandb_run_id.txt`, so a resumed run continues
the same W&B run (W&B keeps the first value logged for a step; a resumed fmjax run logs the same
values again, timing aside, and W&B ignores them). W&B's local files go to `WORKDIR/wandb/` (for
a gs:// workdir, to W&B's default `./wandb/`); `WANDB_MODE=offline` keeps everything there, for
`wandb sync` later.
"""

import importlib.util
import pathlib
import uuid

import jax
import numpy as np

from fmjax.errors import UserError
from fmjax.runtime import workdir_files

RUN_ID_FILE = "wandb_run_id.txt"


def check_installed(logging_config) -> None:
    """UserError when W&B logging is asked for but wandb is not installed (checked before the
    workdir is touched)."""
    if logging_config.wandb_project and importlib.util.find_spec("wandb") is None:
        raise UserError(f"config.logging.wandb_project={logging_config.wandb_project!r} needs "
                        "wandb, which is not installed: pip install 'fmjax[wandb]'")


def _run_id(workdir: pathlib.Path) -> str:
    """The W&B run id stored in the workdir, or a new one (stored before W&B sees it, so a crash
    in between cannot start a second run)."""
    path = workdir / RUN_ID_FILE
    if path.exists():
        return workdir_files.read_bytes(path, "the run's W&B id").decode().strip()
    run_id = uuid.uuid4().hex[:12]   # W&B ids: letters and digits
    workdir_files.write_atomic(path, run_id.encode())
    return run_id


class WandbSink:
    """One W&B run, written by process 0 beside `metrics.jsonl` (`MetricWriters` sinks)."""

    def __init__(self, run):
        self.run = run

    @classmethod
    def open(cls, logging_config, config_dict: dict, workdir: pathlib.Path) -> "WandbSink | None":
        """The W&B run of this workdir (resumed if it has one); None without a project or on a
        process other than 0."""
        if not logging_config.wandb_project or jax.process_index() != 0:
            return None
        import wandb
        run = wandb.init(
            project=logging_config.wandb_project, entity=logging_config.wandb_entity or None,
            name=logging_config.wandb_run_name or None, tags=list(logging_config.wandb_tags),
            config=config_dict, id=_run_id(workdir), resume="allow",
            dir=None if workdir_files.is_url(workdir) else str(workdir),
            settings=wandb.Settings(console="off", silent=True))
        return cls(run)

    def write(self, step: int, record: dict) -> None:
        self.run.log(record, step=step)

    def write_images(self, step: int, grids: dict[str, np.ndarray]) -> None:
        import wandb
        self.run.log({name: wandb.Image(grid) for name, grid in grids.items()}, step=step)

    def close(self) -> None:
        self.run.finish()
