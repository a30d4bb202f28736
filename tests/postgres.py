"""A throwaway PostgreSQL server for tests: initdb into a temp directory, run on a free loopback port with
durability off, hand out fresh databases, stop and delete everything on exit. A server of a test's own
(`running_postgres`) can be stopped and started again on the same port, to test outages and recovery.

    from tests.postgres import postgres_url  # noqa: F401  (the session fixture)

    async def test_x(postgres_url):
        url = create_schema(postgres_url)     # a new, empty schema: the URL's search_path
        url = create_database(postgres_url)   # or a whole new database on the same server

The superuser `postgres` connects without a password over TCP; every other role must give its password
(scram-sha-256), so tests can check that a password never shows up in error text.
PostgreSQL refuses to run as root, so under root the server and initdb run as the `postgres` OS user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.processes import STOP_TIMEOUT_S, free_port, missing, stop

__all__ = [
    "PostgresServer",
    "create_database",
    "create_schema",
    "postgres_binaries",
    "postgres_url",
    "running_postgres",
]

STARTUP_TIMEOUT_S = 30.0
SUPERUSER = "postgres"
# Durability is worthless for a server that is deleted after the tests and costs most of their time.
_FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}
_HBA = (
    "local all all trust\n"
    f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
)


class PostgresServer:
    """One postgres process on an initialised data directory; `stop()` and `start()` keep the port and the
    data, so clients reconnect to the same databases."""

    def __init__(self, binaries: Path, directory: Path, owner: pwd.struct_passwd | None) -> None:
        self.binaries = binaries
        self.directory = directory
        self.owner = owner
        self.port = free_port()
        self.log = directory / "postgres.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The superuser's URL for the `postgres` maintenance database."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        settings = {**_FAST_SETTINGS, "listen_addresses": "127.0.0.1", "port": str(self.port),
                    "unix_socket_directories": str(self.directory)}
        arguments = [str(self.binaries / "postgres"), "-D", str(self.directory / "data")]
        arguments += [f"-c{name}={value}" for name, value in settings.items()]
        with open(self.log, "ab") as out:
            self._process = subprocess.Popen(
                arguments, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **_user_options(self.owner)
            )
        try:
            _wait_until_accepting(self._process, self.url, self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Fast shutdown: connected clients are cut off, as when a real server goes away."""
        if self._process is not None:
            _shut_down(self._process)
            self._process = None


def postgres_binaries() -> Path | None:
    """The directory holding initdb and postgres: $PG_BIN, else the newest Debian install, else PATH."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).parent))
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


def _version(path: str) -> int:
    number = Path(path).parent.name
    return int(number) if number.isdigit() else 0


@contextmanager
def running_postgres(binaries: Path) -> Iterator[PostgresServer]:
    """Start a server and yield it once it accepts connections; stop it and delete its files on exit.

    Its directory comes from tempfile rather than pytest's tmp_path: under root the server runs as the
    postgres user, who cannot enter pytest's private (0700, root-owned) temp tree."""
    directory = Path(tempfile.mkdtemp(prefix="ops-agent-pg-"))
    owner = _server_owner()
    server = PostgresServer(binaries, directory, owner)
    try:
        if owner is not None:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        data = directory / "data"
        _run_as(owner, [str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], directory / "initdb.log")
        (data / "pg_hba.conf").write_text(_HBA, encoding="utf-8")
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def create_database(url: str, name: str | None = None) -> str:
    """Create an empty database on the server of `url` (a superuser URL); returns its URL."""
    name = name or f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return url.rsplit("/", 1)[0] + "/" + name


def create_schema(url: str, name: str | None = None) -> str:
    """Create an empty schema in the database of `url`; returns `url` with that schema as its search_path.

    Milliseconds where a database takes tenths of a second, and as isolated for code that names its
    tables unqualified."""
    name = name or f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{name}"


def _server_owner() -> pwd.struct_passwd | None:
    """The account the server runs as: `postgres` when we are root (PostgreSQL refuses root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root but there is no `postgres` user to run PostgreSQL as") from None


def _user_options(owner: pwd.struct_passwd | None) -> dict:
    if owner is None:
        return {}
    env = {**os.environ, "HOME": owner.pw_dir}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [], "env": env}


def _run_as(owner: pwd.struct_passwd | None, arguments: list[str], log: Path) -> None:
    with open(log, "wb") as out:
        result = subprocess.run(arguments, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                timeout=STARTUP_TIMEOUT_S, **_user_options(owner))
    if result.returncode != 0:
        raise RuntimeError(f"{arguments[0]} exited with {result.returncode}:\n{log.read_text()[-3000:]}")


def _wait_until_accepting(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            pass  # not listening yet, or still starting up
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres did not accept connections within {STARTUP_TIMEOUT_S} s:\n"
                               f"{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _shut_down(process: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT), else immediate (SIGQUIT): a smart one (SIGTERM) would wait for every client a
    test left connected, and SIGKILL would leave the server's children behind."""
    for how in (signal.SIGINT, signal.SIGQUIT):
        if process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
    stop(process)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A superuser URL on a server shared by the session; create_schema() or create_database() isolate a test.

    Without PostgreSQL installed the tests that use it skip, except in CI (`CI` set), where they fail."""
    binaries = postgres_binaries()
    if binaries is None:
        missing("PostgreSQL (initdb, postgres) not found: install Debian's postgresql package (scripts/ci-packages)")
    with running_postgres(binaries) as server:
        yield server.url
