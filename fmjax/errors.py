"""The one exception type that means "the user asked for something impossible".

The CLI turns it into a single line on stderr and exit status 2, before any work is done.
"""


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


class Preempted(RuntimeError):
    """SIGTERM: training stopped early after saving a checkpoint; the same command resumes."""
