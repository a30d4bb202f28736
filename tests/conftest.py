"""Shared fixtures. Everything runs for real: SQLite files in tmp_path, HTTP servers on loopback sockets."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ops_agent.config import Settings, load_settings
from ops_agent.governance import Caller
from ops_agent.services import Services, open_services
from sandbox.notify import NotifySinks
from tests.postgres import postgres_url  # noqa: F401  (one throwaway PostgreSQL server per session)
from tests.redis_server import redis_server, redis_url  # noqa: F401  (one throwaway redis-server per session)


@dataclass
class Tokens:
    """MCP bearer tokens for two agents of one HTTP server."""

    ops_agent: str
    dev_agent: str

    def all(self) -> list[str]:
        return [self.ops_agent, self.dev_agent]


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens(ops_agent=f"tok-ops-{secrets.token_hex(24)}", dev_agent=f"tok-dev-{secrets.token_hex(24)}")


def paging_notify_config(sinks: NotifySinks) -> dict[str, Any]:
    """The `notify` config section that pages every sink of `sandbox.notify`, retrying fast."""
    return sinks.paging_config(backoff_s=0.05, max_backoff_s=0.2, poll_interval_s=0.05)


def make_settings(tmp_path: Path, **environ: str) -> Settings:
    """Settings on embedded defaults with the database in tmp_path; `environ` as environment variables."""
    return load_settings(environ={"OPS_AGENT_DB": str(tmp_path / "ops-agent.db"), **environ})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    async with open_services(settings) as opened:
        yield opened


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment of a CLI run in this process: the database in tmp_path, no config file, no key."""
    monkeypatch.setenv("OPS_AGENT_DB", str(tmp_path / "cli.db"))
    monkeypatch.delenv("OPS_AGENT_CONFIG", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


@pytest.fixture
def caller(settings: Settings) -> Caller:
    return Caller(settings.governance.agent_name, via="test")


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
