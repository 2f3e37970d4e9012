"""Early stopping: end a run once its selection metric has stopped improving.

`config.train.early_stopping.metric` (a selection metric, `configs.selection_metrics`: "" = off)
is read at each eval on the `train.eval_every` grid; an eval improves on the best so far when it
is better by more than `min_delta` (lower for `mode="min"`, higher for `"max"`). After `patience`
evals in a row without improvement the run stops at that eval. The final eval of a run whose
`num_steps` is off the grid does not count, so a run stopped by `num_steps` and resumed with more
steps counts exactly the evals of an uninterrupted run. The state travels with every checkpoint
(fmjax/checkpoint.py, item `progress`), so a resumed run continues the count bit for bit and a
resumed stopped run does nothing more.
"""

import dataclasses
import math

from fmjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """The count so far: the best value and its step, evals since then without improvement."""
    best: float | None = None
    best_step: int = 0
    evals_without_improvement: int = 0
    stopped_at: int = 0        # the step the run stopped at (0: not stopped)
    metric: str = ""           # what was counted, and how ("": nothing yet, or a checkpoint
    mode: str = ""             # saved before these were stored)

    @classmethod
    def from_dict(cls, d: dict | None) -> "EarlyStopping":
        """The state saved with a checkpoint ({} or None: a fresh count)."""
        return cls(**(d or {}))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def update(self, es_config, step: int, value: float) -> "EarlyStopping":
        """The state after the eval at `step` measured `value` for `es_config.metric`."""
        sign = 1.0 if es_config.mode == "min" else -1.0
        self = dataclasses.replace(self, metric=es_config.metric, mode=es_config.mode)
        if self.best is None or sign * (self.best - value) > es_config.min_delta or (
                math.isnan(self.best) and not math.isnan(value)):
            return dataclasses.replace(self, best=float(value), best_step=step,
                                       evals_without_improvement=0)
        waited = self.evals_without_improvement + 1
        return dataclasses.replace(self, evals_without_improvement=waited,
                                   stopped_at=step if waited >= es_config.patience else 0)

    def message(self, es_config) -> str:
        """The line a stopped run prints."""
        return (f"fmjax: early stopping at step {self.stopped_at}: "
                f"{self.metric or es_config.metric} has not improved by more than "
                f"{es_config.min_delta:g} for {self.evals_without_improvement} evals "
                f"(best {self.best:.4g} at step {self.best_step})")

    def check_resume(self, es_config, step: int) -> None:
        """A resumed run must count the metric, in the mode, its checkpoint counted: another
        one's values would be compared with this one's best."""
        if es_config.metric and self.metric and (self.metric, self.mode) != (es_config.metric,
                                                                              es_config.mode):
            raise UserError(
                f"config.train.early_stopping.metric={es_config.metric!r} (mode "
                f"{es_config.mode!r}), but the checkpoint at step {step} counted "
                f"{self.metric!r} (mode {self.mode!r}); resume with those, or start a new "
                "--workdir")


def counts(train_config, step: int) -> bool:
    """Whether the eval at `step` counts toward early stopping (on and on the eval grid)."""
    return bool(train_config.early_stopping.metric) and step % train_config.eval_every == 0
