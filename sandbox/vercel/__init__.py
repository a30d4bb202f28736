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

import time

from starlette.applications import Starlette

from sandbox.threaded_server import ThreadedServer, listen
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


class VercelEmulator(ThreadedServer):
    """Runs the emulator with uvicorn on 127.0.0.1 in a background thread (sync or async context manager)."""

    name = "Vercel emulator"

    def __init__(
        self, config: EmulatorConfig | None = None, *, port: int = 0, clock: Clock = time.time,
        log_level: str = "warning",
    ) -> None:
        super().__init__(port=port, log_level=log_level)
        self.config = config or EmulatorConfig()
        self.app: Starlette = create_app(self.config, clock=clock)
        self.state: State = self.app.state.vercel

    @property
    def token(self) -> str:
        """The first configured token (the default one: `sandbox-token`)."""
        return next(iter(self.config.tokens))

    @property
    def team_id(self) -> str:
        return self.config.tokens[self.token]
