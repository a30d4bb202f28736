"""An ASGI app served by uvicorn on 127.0.0.1 in a background thread: the stand-ins' common runner.

A subclass sets `app` (and `name`, for the thread and errors) before `start()`; the socket is bound first,
so `base_url` is known before the server answers. Usable as a sync or an async context manager.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn

__all__ = ["STARTUP_TIMEOUT_S", "Lifecycle", "ThreadedServer", "listen"]

STARTUP_TIMEOUT_S = 10.0


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0 = a free one), bound before the server starts so the port is known."""
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets (else small answers stall on Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


class Lifecycle:
    """`start()`/`stop()` as a sync and an async context manager (the async one starts in a thread)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


class ThreadedServer(Lifecycle):
    name = "server"
    app: Any

    def __init__(self, *, port: int = 0, log_level: str = "warning") -> None:
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT (kept after stop, so a test can show where it was)."""
        if self._base_url is None:
            raise RuntimeError(f"the {self.name} has not been started")
        return self._base_url

    def start(self) -> Self:
        self._socket = listen("127.0.0.1", self._port)
        self._base_url = "http://127.0.0.1:%d" % self._socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self._log_level, lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.name} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
