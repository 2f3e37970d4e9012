"""The variant after `:` in `--config FILE:VARIANT`: comma-separated flags (`:digits,runlocal`), as
big_vision's `parse_arg` reads them.

An experiment file declares its variants once, as the bool keyword parameters of its
`get_config` (`def get_config(digits=False, conv=False)`), so the error for an unknown one, the
tests and a direct call (`get_config(digits=True)`) all read the same list. `runlocal` is every
file's variant and means the same everywhere (`shrink_for_local_run`); a file names it as a
parameter only to choose something for it (a smaller model, an offline dataset), and adapts the
shared shrink with a module-level `RUNLOCAL` dict of config overrides.
"""

import inspect
from collections.abc import Callable, Mapping

import ml_collections

from fmjax.errors import UserError

RUNLOCAL = "runlocal"


def declared(get_config: Callable) -> tuple[str, ...]:
    """The variants `get_config` declares (its bool keyword parameters), then `runlocal`."""
    names = [name for name, p in inspect.signature(get_config).parameters.items()
             if isinstance(p.default, bool) and name != RUNLOCAL]
    return (*names, RUNLOCAL)


def parse(variant: str, known: tuple[str, ...], path: str) -> frozenset[str]:
    """The flags of `variant` ("digits,runlocal"); UserError naming the first one not in `known`."""
    flags = [flag.strip() for flag in variant.split(",") if flag.strip()]
    for flag in flags:
        if flag not in known:
            raise UserError(f"{path}: unknown config variant '{flag}' "
                            f"(known: {', '.join(known)})")
    return frozenset(flags)


def arguments(flags: frozenset[str], get_config: Callable) -> dict[str, bool]:
    """The keyword arguments that turn `flags` on in `get_config` (in its parameter order)."""
    return {name: True for name in inspect.signature(get_config).parameters if name in flags}


def one_of(**flags: bool) -> str:
    """The name of the one flag that is on ("" if none): for variants that exclude each other
    (two datasets); UserError if several are on."""
    on = [name for name, value in flags.items() if value]
    if len(on) > 1:
        raise UserError(f"config variants {' and '.join(on)} exclude each other; choose one")
    return on[0] if on else ""


# `runlocal`: 100 steps that exercise training, eval, logging and checkpointing in seconds to a
# minute on a laptop CPU, with small batches and a short warmup.
LOCAL_TRAIN = dict(num_steps=100, steps_per_call=10, log_every=10, eval_every=50)
LOCAL_CHECKPOINT_EVERY = 50
LOCAL_MAX_BATCH_SIZE = 32
LOCAL_MAX_EVAL_BATCH_SIZE = 256
LOCAL_MAX_WARMUP_STEPS = 10


def shrink_for_local_run(config: ml_collections.ConfigDict, overrides: Mapping | None = None) -> None:
    """Make `config` the `runlocal` run in place, then apply the experiment's `overrides`."""
    train = config.train
    train.update(LOCAL_TRAIN, batch_size=min(train.batch_size, LOCAL_MAX_BATCH_SIZE),
                 eval_batch_size=min(train.eval_batch_size, LOCAL_MAX_EVAL_BATCH_SIZE))
    config.checkpoint.every = LOCAL_CHECKPOINT_EVERY
    config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, LOCAL_MAX_WARMUP_STEPS)
    config.update(overrides or {})
