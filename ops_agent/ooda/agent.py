"""`OpsAgentOODA` (alias `OpsAgent`): the seed's Python API.

    async with OpsAgentOODA() as agent:
        result = await agent.execute_task("check the health of the api", priority="high")

It can also be used without `async with`, as the seed shows; then call `await agent.aclose()` at the end.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ops_agent.config import Settings, load_settings
from ops_agent.governance.gate import Caller
from ops_agent.services import Services, open_services

__all__ = ["OpsAgent", "OpsAgentOODA"]


class OpsAgentOODA:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        config_path: str | Path | None = None,
        vercel_token: str | None = None,
        enable_monitoring: bool = True,
        **open_options: Any,
    ) -> None:
        settings = settings or load_settings(config_path)
        if vercel_token:
            vercel = settings.vercel.model_copy(update={"token": SecretStr(vercel_token)})
            settings = settings.model_copy(update={"vercel": vercel})
        self.settings = settings
        self._options = {"enable_monitoring": enable_monitoring, **open_options}
        self._stack: AsyncExitStack | None = None
        self._services: Services | None = None

    async def services(self) -> Services:
        if self._services is None:
            self._stack = AsyncExitStack()
            self._services = await self._stack.enter_async_context(open_services(self.settings, **self._options))
        return self._services

    async def execute_task(self, task: str, priority: str = "medium", *, caller: Caller | None = None) -> dict:
        """Observe, plan, act and report; returns the TaskReport as a dict (`status`, `summary`, `steps`, ...)."""
        services = await self.services()
        report = await services.registry.invoke(
            caller or services.identity, "execute_task", {"task": task, "priority": priority}
        )
        return report.model_dump(mode="json")

    async def aclose(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._services = None

    async def __aenter__(self) -> OpsAgentOODA:
        await self.services()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


OpsAgent = OpsAgentOODA
