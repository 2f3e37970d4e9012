"""Where a sweep's Optuna study lives, and the lock under which trials are handed out.

Default: an Optuna journal file in the sweep directory (`DIR/study.journal`). Nothing to start,
and it is what Optuna recommends for several processes on one machine: every change is one
appended line, written under a file lock that a killed process cannot hold for ever (a stale lock
is broken after its grace period), where SQLite's writers contend for one database lock.
`--storage URL` (postgresql://, mysql://, sqlite:///) names a database that several hosts share,
each running the same `fmjax sweep` command with its own --workdir.

`BudgetLock` makes "count the trials, then ask for one more" atomic across every process that
works on the study, so the budget is never exceeded: a `flock` on a file beside the study (the
sweep directory's `budget.lock`; `FILE.lock` for sqlite:///FILE), or the database's own session
lock (PostgreSQL `pg_advisory_lock`, MySQL `GET_LOCK`). The kernel or the database releases each
when its holder dies, even by SIGKILL.
"""

import contextlib
import fcntl
import os
import pathlib
import threading
import zlib

import optuna

from fmjax.errors import UserError, first_line

STUDY_NAME = "fmjax-sweep"
JOURNAL_FILE = "study.journal"
LOCK_FILE = "budget.lock"
SCHEMES = ("postgresql", "mysql", "sqlite")
_LOCK_KEY = zlib.crc32(STUDY_NAME.encode())   # PostgreSQL's advisory lock id


def scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0]


def connect(url: str) -> optuna.storages.RDBStorage:
    """The database at `url`, reached now; UserError if the URL is unknown or unreachable."""
    if scheme(url) not in SCHEMES:
        raise UserError(f"--storage={url!r}: unknown database URL (give postgresql://..., "
                        "mysql://... or sqlite:///FILE)")
    if scheme(url) == "sqlite" and _sqlite_file(url) in ("", ":memory:"):
        raise UserError(f"--storage={url!r}: give the database file, sqlite:///FILE "
                        "(sqlite:////abs/path.db); an in-memory database is lost at exit and "
                        "shared by no one")
    try:
        with BudgetLock(url, None)():   # hosts starting at once would race to create the tables
            return optuna.storages.RDBStorage(url)
    except ImportError as e:
        raise UserError(f"--storage={scheme(url)}://...: its database driver is not installed: "
                        "pip install 'fmjax[sweep]' (psycopg for postgresql://, PyMySQL for "
                        "mysql+pymysql://)") from e
    except Exception as e:   # SQLAlchemy's driver and connection errors, Optuna's own
        raise UserError(f"--storage: cannot reach {_without_password(url)}: "
                        f"{type(e).__name__}: {first_line(e)}") from e


def _sqlite_file(url: str) -> str:
    """FILE of sqlite:///FILE ("" for anything else, such as sqlite:// or sqlite:///)."""
    head, sep, path = url.partition(":///")
    return path.split("?", 1)[0] if sep and "/" not in head else ""


def _without_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme_part, _, user = head.partition("://")
    return f"{scheme_part}://{user.split(':')[0]}@{tail}"


def journal(sweep_dir: pathlib.Path) -> optuna.storages.JournalStorage:
    backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / JOURNAL_FILE))
    return optuna.storages.JournalStorage(backend)


class BudgetLock:
    """A lock held by one thread of one process of the whole study at a time (see above)."""

    def __init__(self, url: str | None, sweep_dir: pathlib.Path | None):
        self._threads = threading.Lock()
        self._url = url if url and scheme(url) in ("postgresql", "mysql") else None
        sqlite = url and scheme(url) == "sqlite"
        self._path = (pathlib.Path(_sqlite_file(url) + ".lock") if sqlite
                      else sweep_dir and sweep_dir / LOCK_FILE)
        self._engine = None
        if self._url:
            import sqlalchemy
            self._engine = sqlalchemy.create_engine(self._url, poolclass=sqlalchemy.pool.NullPool)

    @contextlib.contextmanager
    def __call__(self):
        with self._threads, (self._database() if self._engine else self._file()):
            yield

    @contextlib.contextmanager
    def _file(self):
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _database(self):
        from sqlalchemy import text
        postgres = scheme(self._url) == "postgresql"
        if postgres:
            take, give = (f"SELECT pg_advisory_lock({_LOCK_KEY})",
                          f"SELECT pg_advisory_unlock({_LOCK_KEY})")
        else:
            take, give = (f"SELECT GET_LOCK('{STUDY_NAME}', -1)",
                          f"SELECT RELEASE_LOCK('{STUDY_NAME}')")
        with self._engine.connect() as connection:
            connection.execute(text(take))
            try:
                yield
            finally:
                connection.execute(text(give))
