"""The Vercel emulator over real loopback sockets, with every exchange checked against the contract.

Each test starts its own emulator (`await vercel(**config)`); its httpx2 clients check every response on
arrival: X-RateLimit-* headers always, and request and response against the OpenAPI subset with
openapi-core. A request a test sends malformed on purpose carries `INVALID_REQUEST`, and then the
validator must reject it (so the check itself is shown to work).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from sandbox.vercel import EmulatorConfig, VercelEmulator

from tests.vercel_contract import SUBSET, Contract

@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract(SUBSET)


class ManualClock:
    """A clock the test moves: build progress without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Sandbox:
    emu: VercelEmulator
    api: httpx2.AsyncClient  # authenticated, with teamId, like the ops-agent client
    make_client: Callable[..., Awaitable[httpx2.AsyncClient]]

    @property
    def project_id(self) -> str:
        return next(iter(self.emu.state.projects))

    async def deploy(self, ref: str = "main", target: str | None = "production", **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "demo-app",
            "project": "demo-app",
            "gitSource": {"type": "github", "ref": ref, "org": "acme", "repo": "demo-app"},
            **extra,
        }
        if target is not None:
            body["target"] = target
        response = await self.api.post("/v13/deployments", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def get(self, deployment_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v13/deployments/{deployment_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def project(self) -> dict[str, Any]:
        response = await self.api.get("/v9/projects/demo-app")
        assert response.status_code == 200, response.text
        return response.json()

    def production(self) -> str | None:
        return self.emu.state.production_deployment_id("demo-app")


@pytest.fixture
async def vercel(contract: Contract) -> AsyncIterator[Callable[..., Awaitable[Sandbox]]]:
    """`await vercel(clock=..., **EmulatorConfig keys)` starts an emulator (seeded, 50 ms builds by default)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(clock: Callable[[], float] = time.time, **config: Any) -> Sandbox:
            settings = EmulatorConfig(**{"seed": 7, "build_time_s": 0.05, **config})
            emu = await stack.enter_async_context(VercelEmulator(settings, clock=clock))
            async def check(response: httpx2.Response) -> None:
                await response.aread()
                for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
                    assert response.headers.get(header, "").isdigit(), f"{header} missing on {response.url.path}"
                if response.status_code >= 400:
                    error = response.json()["error"]
                    assert isinstance(error["code"], str) and isinstance(error["message"], str)
                contract.check(response.request, response)

            async def make_client(
                token: str | None = emu.token, team_id: str | None = emu.team_id
            ) -> httpx2.AsyncClient:
                headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
                params = {"teamId": team_id} if team_id is not None else {}
                client = httpx2.AsyncClient(
                    base_url=emu.base_url, headers=headers, params=params, timeout=10,
                    event_hooks={"response": [check]},
                )
                return await stack.enter_async_context(client)

            return Sandbox(emu, await make_client(), make_client)

        yield start


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
