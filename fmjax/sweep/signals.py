"""The sweep's SIGINT and SIGTERM, caught from the start of the process.

Python runs a signal handler between any two bytecodes, including inside a garbage-collection
callback (JAX registers one), where the KeyboardInterrupt it raises is printed as 'Exception
ignored' and lost: a Ctrl-C while the sweep imported its libraries could be dropped and the sweep
ran on. Here a signal is only recorded; the sweep looks at `received` before it writes DIR and
its workers stop on it (fmjax/sweep/command.py).
"""

import signal

received: list[int] = []     # the stop signals received, in order
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _record(signum, frame) -> None:
    received.append(signum)


def catch() -> None:
    """Record SIGINT and SIGTERM from now on (as the sweep's own handler does later, even where
    the process was started to ignore them, as a shell's background job ignores SIGINT)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _record)
