"""A local Vercel REST API: the subset ops-agent uses (../shared/contracts/VERCEL.md), over real HTTP.

    with VercelEmulator(EmulatorConfig(build_time_s=0.05)) as emu:
        emu.base_url   # http://127.0.0.1:PORT, to give the client as VERCEL_API_URL
        emu.token, emu.team_id
        emu.state.production_deployment_id("demo-app")

Deployments build on a timer (QUEUED -> BUILDING -> READY or ERROR), production follows READY production
deployments until a rollback, and faults (failed builds, 429/5xx, lost answers, latency) can be injected.
`python -m sandbox vercel` runs it in the foreground. GET /_sandbox/state shows everything.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from sandbox.vercel.app import create_app
from sandbox.vercel.config import (
    CustomEnvironmentConfig,
    EmulatorConfig,
    GitLinkConfig,
    ProjectConfig,
    UserConfig,
)
from sandbox.vercel.state import Clock, State

__all__ = [
    "CustomEnvironmentConfig",
    "EmulatorConfig",
    "GitLinkConfig",
    "ProjectConfig",
    "State",
    "UserConfig",
    "VercelEmulator",
    "create_app",
    "listen",
]

STARTUP_TIMEOUT_S = 10.0


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0 = a free one), bound before the server starts so the port is known."""
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets (else small answers stall on Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


class VercelEmulator:
    """Runs the emulator with uvicorn on 127.0.0.1 in a background thread (sync or async context manager)."""

    def __init__(
        self, config: EmulatorConfig | None = None, *, port: int = 0, clock: Clock = time.time,
        log_level: str = "warning",
    ) -> None:
        self.config = config or EmulatorConfig()
        self.app: Starlette = create_app(self.config, clock=clock)
        self.state: State = self.app.state.vercel
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
            raise RuntimeError("the emulator has not been started")
        return self._base_url

    @property
    def token(self) -> str:
        """The first configured token (the default one: `sandbox-token`)."""
        return next(iter(self.config.tokens))

    @property
    def team_id(self) -> str:
        return self.config.tokens[self.token]

    def start(self) -> VercelEmulator:
        self._socket = listen("127.0.0.1", self._port)
        self._base_url = "http://127.0.0.1:%d" % self._socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self._log_level, lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="vercel-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Vercel emulator did not start")
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

    def __enter__(self) -> VercelEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> VercelEmulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
