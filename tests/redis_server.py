"""A throwaway redis-server for tests: a free loopback port, no persistence, a temp directory; it can be
stopped and started again on the same port to test degraded mode and recovery (with `persistent=True` its
data survives that too: an append-only file, fsynced at every write).

    from tests.redis_server import redis_url  # noqa: F401  (the session fixture)

    async def test_x(redis_url):                  # a server shared by the session; isolate by key prefix
        ...

    def test_outage():
        with running_redis() as server:           # a server of the test's own, free to stop
            server.stop(); ...; server.start()

Without redis-server installed the tests that use it skip, except in CI (`CI` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import redis.exceptions

from tests.processes import free_port, missing, stop

__all__ = ["RedisServer", "redis_binary", "redis_server", "redis_url", "require_redis", "running_redis"]

STARTUP_TIMEOUT_S = 10.0


def redis_binary() -> Path | None:
    """$REDIS_SERVER, else redis-server on PATH, else Debian's /usr/bin/redis-server."""
    for candidate in (os.environ.get("REDIS_SERVER", ""), shutil.which("redis-server") or "", "/usr/bin/redis-server"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def require_redis() -> Path:
    """The binary, or skip (fail under CI) when it is missing."""
    binary = redis_binary()
    if binary is None:
        missing("redis-server not found: install Debian's redis-server package (scripts/ci-packages)")
    return binary


class RedisServer:
    """One redis-server process on a fixed port; `stop()` and `start()` keep the port, so clients reconnect.
    Without `persistent` a restart starts empty, as a cache would; with it, as a durable queue must not."""

    def __init__(
        self, binary: Path, directory: Path, port: int | None = None, password: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.persistent = persistent
        self.log = directory / "redis.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        arguments = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]),
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--logfile", "",
        ]
        if self.password:
            arguments += ["--requirepass", self.password]
        with open(self.log, "ab") as out:
            self._process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self._wait_until_answering()

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                             socket_connect_timeout=1, socket_timeout=1)
        try:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self._process.returncode}:\n{self.log.read_text()[-3000:]}"
                    )
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:  # not listening yet, or still loading
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer PING within {STARTUP_TIMEOUT_S} s:\n"
                                       f"{self.log.read_text()[-3000:]}")
                time.sleep(0.02)
        finally:
            client.close()


@contextmanager
def running_redis(
    binary: Path | None = None, password: str | None = None, *, persistent: bool = False
) -> Iterator[RedisServer]:
    """Start a server and yield it once it answers PING; stop it and delete its directory on exit."""
    binary = binary or require_redis()
    directory = Path(tempfile.mkdtemp(prefix="ops-agent-redis-"))
    server = RedisServer(binary, directory, password=password, persistent=persistent)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A server shared by the session. Do not stop it in a test; use `running_redis()` for that."""
    with running_redis(require_redis()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
