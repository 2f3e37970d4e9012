"""What the plots of one trained run share: check that one workdir of the right kind was given,
restore it, and read examples of its eval (or validation) split."""

import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from fmjax import runs
from fmjax.data.validation import NO_VALIDATION_FRACTION
from fmjax.errors import UserError
from fmjax.plots import workdirs


def check(paths: Sequence[pathlib.Path], kind: str, fits: Callable, needs: str):
    """(workdir, config) of the one run in `paths` (`workdirs.one_run`); UserError unless
    `fits(config)`."""
    workdir = workdirs.one_run(list(paths), kind)
    config = runs.read_config(workdir)
    if not fits(config):
        raise UserError(f"{workdir} holds a '{config.task}' run with model "
                        f"'{config.model.name}'; {kind} plots need {needs}")
    return workdir, config


def examples(run: runs.Run, split: str, index_N: np.ndarray) -> dict:
    """The examples numbered `index_N` of the run's `split` (eval | val) as one numpy batch;
    UserError for an index out of range. `run` must be loaded `with_data`."""
    pipeline = run.exp.pipeline
    n = pipeline.info.num_eval if split == "eval" else pipeline.info.num_val
    if n == 0 and split == "val" and "validation_fraction" not in run.config.data:   # text
        raise UserError(f"{run.workdir} holds no val split: {NO_VALIDATION_FRACTION}; use "
                        "--split eval")
    if n == 0:
        raise UserError(f"{run.workdir} holds no {split} split (config.data.validation_fraction)")
    bad = index_N[(index_N < 0) | (index_N >= n)]
    if bad.size:
        raise UserError(f"example {int(bad[0])} is out of range: the {split} split holds {n} "
                        f"examples (0 to {n - 1})")
    read = pipeline.eval_examples if split == "eval" else pipeline.val_examples
    return read(index_N)
