"""Library chatter stays off the console: fmjax's own lines are the only ones a user reads there.

When a disk fills up or a checkpoint is damaged, Orbax, TensorStore and asyncio report it in tens to
hundreds of lines of their own (logged errors, tracebacks from background threads, "exception was
never retrieved"), while fmjax raises one line that says what happened and what is intact. So
the `fmjax` command sends their logs nowhere (`silence`), and a training run, once it holds its
workdir's lock, to `WORKDIR/library.log` (`to_workdir`). Uncaught errors of fmjax itself (the
main thread's traceback) still reach the console. Code that imports fmjax as a library (tests,
notebooks) keeps its own logging: `to_workdir` acts only after `silence`.
"""

import logging
import pathlib
import sys
import threading

import jax

from fmjax.runtime import workdir_files

LOG_FILE = "library.log"
_logger = logging.getLogger("fmjax.libraries")
_routed = False   # set by `silence`: the fmjax command owns this process's logging


def _log_unraisable(unraisable) -> None:
    _logger.error("%s: %r", unraisable.err_msg or "Exception ignored in", unraisable.object,
                  exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))


def _log_thread_exception(args) -> None:
    _logger.error("exception in thread %s", args.thread.name if args.thread else "?",
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


class _FileOrNothing(logging.FileHandler):
    """A file opened at the first record; records that cannot be written are dropped (a full or
    read-only disk is fmjax's to report, in its own line)."""

    def __init__(self, path):
        super().__init__(path, delay=True)

    def emit(self, record):
        try:
            super().emit(record)
        except OSError:   # FileHandler opens the file outside its own error handling
            pass


def _send_to(handler: logging.Handler) -> None:
    """Route Python logging, warnings, unraisable exceptions and background threads' uncaught
    exceptions to `handler` only."""
    global _routed
    _routed = True
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    logging.raiseExceptions = False     # a full disk must not print "--- Logging error ---"
    logging.captureWarnings(True)
    sys.unraisablehook = _log_unraisable
    threading.excepthook = _log_thread_exception


def silence() -> None:
    """Drop library logs (until `to_workdir`)."""
    _send_to(logging.NullHandler())


def to_workdir(workdir) -> None:
    """Append library logs to `workdir/library.log` (one file per process), if `silence` was
    called; a gs:// workdir has no appendable files, so there they stay dropped."""
    if not _routed or workdir_files.is_url(workdir):
        return
    index = jax.process_index()
    name = LOG_FILE if index == 0 else f"library.process_{index}.log"
    handler = _FileOrNothing(pathlib.Path(workdir) / name)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _send_to(handler)
