"""The one exception type that means "the user asked for something impossible".

The CLI turns it into a single line on stderr and exit status 2, before any work is done.
"""

import signal


class UserError(ValueError):
    """Bad input: unknown key, impossible mesh, missing dataset, incompatible checkpoint, ..."""


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (or its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class WorkdirError(UserError):
    """The workdir cannot be written (no permission, disk full, not a directory); training stops
    and the checkpoints written before stay intact."""


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/Inf loss; the last good checkpoint is kept, nothing newer saved."""


def stopped_by(signum: int) -> str:
    """'interrupted (SIGINT)' (Ctrl-C), 'preempted (SIGTERM)' (a scheduler, `kill`)."""
    return "interrupted (SIGINT)" if signum == signal.SIGINT else "preempted (SIGTERM)"


class Interrupted(BaseException):
    """SIGTERM (SIGINT raises KeyboardInterrupt) where there is nothing to save: before the train
    loop, after it, in `fmjax eval` or `sample`. A BaseException, like KeyboardInterrupt, so that
    no library's `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(stopped_by(signum))
        self.signum = signum


class Preempted(RuntimeError):
    """SIGTERM or SIGINT: training stopped early after saving a checkpoint; the same command
    resumes. The process exits with `exit_status` (128 + the signal)."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status
