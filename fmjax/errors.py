"""The one exception type that means "the user asked for something impossible".

The CLI turns it into a single line on stderr and exit status 2, before any work is done.
"""


class UserError(ValueError):
    """Bad input: unknown key, impossible mesh, missing dataset, incompatible checkpoint, ..."""


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/Inf loss; the last good checkpoint is kept, nothing newer saved."""
