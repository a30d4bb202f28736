"""The incident lab: the sandbox world and the whole agent, wired as a user would wire them.

    async with Lab(scenario, workdir) as lab:
        ...lab.services (the agent), lab.demo, lab.emulator, lab.sinks, lab.load

The world: the Vercel emulator (builds take `scenario.build_time_s`), the notification sinks, and the demo
service serving whatever production points to. The agent: `open_services` on a config file written into
`workdir` (`ops-agent.yaml`, readable afterwards), which follows the demo's log file, checks its health
every second, scrapes its /metrics, pages every sink, and may roll back `demo-app` or run the two
allow-listed commands that restart the demo or free its disk. The alert rules are `RULES`, each remediated
by the task "fix the demo service". Intervals are seconds, not minutes, so incidents play out in a minute.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from ops_agent.config import load_settings
from ops_agent.governance import Caller
from ops_agent.services import Services, open_services
from ops_agent.tools.alerts.models import Remediation
from sandbox.demo_service import DemoService, LoadGenerator
from sandbox.notify import NotifySinks
from sandbox.notify.config import SinksConfig
from sandbox.scenarios.model import Scenario
from sandbox.vercel import EmulatorConfig, VercelEmulator, listen

__all__ = ["FIX_TASK", "PROJECT", "RULES", "SERVICE", "Lab"]

PROJECT = "demo-app"
SERVICE = "demo"
FIX_TASK = "fix the demo service"
COMMANDS = {"restart": "restart_demo", "free_disk": "free_demo_disk"}
# name, condition, priority: what an engineer would page on for a small web service
RULES: list[tuple[str, str, str]] = [
    ("demo_errors", 'http_error_ratio{service="demo"} > 0.05 for 2s', "critical"),
    ("demo_latency", 'http_latency_ms{service="demo",quantile="0.95"} > 500 for 2s', "high"),
    ("demo_down", "health(demo) == down for 2s", "critical"),
    ("demo_memory", 'process_resident_memory_bytes{job="demo"} > 600000000', "high"),
    ("demo_disk", 'demo_disk_used_ratio{job="demo"} > 0.85', "high"),
]
RULE_SERIES = ("http_error_ratio", "http_latency_ms", "process_resident_memory_bytes", "demo_disk_used_ratio")
DEPLOY_SUSPECT_S = 10.0  # a production deployment this recent is blamed; runtime faults come later than this
PERSON = Caller("ops_agent", via="cli")  # an engineer at the CLI: the deploys a scenario asks for


class Lab:
    def __init__(self, scenario: Scenario, workdir: Path, *, seed: int = 0, dashboard_port: int | None = None) -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.seed = seed
        self.dashboard_port = dashboard_port
        self._stack = AsyncExitStack()
        self.emulator: VercelEmulator
        self.sinks: NotifySinks
        self.demo: DemoService
        self.load: LoadGenerator
        self.services: Services
        self.noise_path = workdir / "noise.log"
        self.dashboard_error: str | None = None

    async def __aenter__(self) -> Lab:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _open(self) -> None:
        stack = self._stack
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = EmulatorConfig(build_time_s=self.scenario.build_time_s, seed=self.seed, rate_limit=100_000)
        self.emulator = await stack.enter_async_context(VercelEmulator(config))
        self.sinks = await asyncio.to_thread(NotifySinks(SinksConfig(slack_rate_per_s=None)).start)
        stack.callback(self.sinks.stop)
        self.demo = await stack.enter_async_context(DemoService(
            self.emulator.state, project=PROJECT, log_path=self.workdir / "demo.log",
            versions=self.scenario.versions, service=SERVICE, seed=self.seed,
        ))
        self.noise_path.touch()
        config_path = self.workdir / "ops-agent.yaml"
        config_path.write_text(yaml.safe_dump(self.agent_config(), sort_keys=False))
        # Only the model key comes from the environment: a VERCEL_TOKEN there must not point the lab at Vercel.
        environ = {k: v for k, v in os.environ.items() if k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
        settings = load_settings(config_path, environ=environ)
        self.services = await stack.enter_async_context(open_services(settings))
        if self.dashboard_port is not None:
            await self._serve_dashboard(stack)
        self.load = await stack.enter_async_context(LoadGenerator(self.demo.base_url, rps=self.scenario.load_rps))

    def agent_config(self) -> dict[str, Any]:
        ctl = [sys.executable, "-m", "sandbox.demo_service.ctl"]
        return {
            "log_level": "WARNING",
            "storage": {"path": str(self.workdir / "ops-agent.db")},
            # the two commands touch only the sandbox's demo service
            "governance": {"policy": {"remediate:restart": "sandbox_only"}},
            "services": [{
                "name": SERVICE, "url": f"{self.demo.base_url}/health", "interval_s": 1, "timeout_s": 1,
                "project": PROJECT, "commands": COMMANDS,
            }],
            "monitoring": {"scrape": [{"name": SERVICE, "url": f"{self.demo.base_url}/metrics", "interval_s": 1, "timeout_s": 1}]},
            "logs": {
                "files": [{"path": str(self.demo.log_path), "service": SERVICE}, {"path": str(self.noise_path), "service": SERVICE}],
                "poll_interval_s": 0.2, "metrics_window_s": 1,
            },
            "alerts": {
                "interval_s": 1,
                "restart_commands": {
                    COMMANDS["restart"]: [*ctl, "restart", "--url", self.demo.admin_url],
                    COMMANDS["free_disk"]: [*ctl, "free-disk", "--url", self.demo.admin_url],
                },
                "command_timeout_s": 20,
            },
            "incidents": {"deploy_suspect_s": DEPLOY_SUSPECT_S, "verify_timeout_s": 30},
            "vercel": {
                "token": self.emulator.token, "team_id": self.emulator.team_id, "api_url": self.emulator.base_url,
                "projects": [PROJECT], "default_project": PROJECT, "sandbox_projects": [PROJECT],
                "poll_interval_s": 0.2, "deploy_timeout_s": 120,
            },
            "notify": self.sinks.paging_config(backoff_s=0.2, max_backoff_s=2, poll_interval_s=0.1),
        }

    async def _serve_dashboard(self, stack: AsyncExitStack) -> None:
        import uvicorn

        from mcp_server.server import build_http_app

        try:
            sock = listen("127.0.0.1", self.dashboard_port or 0)
        except OSError as exc:  # a busy port costs the dashboard, not the run
            self.dashboard_error = f"no dashboard: port {self.dashboard_port}: {exc.strerror}"
            return
        stack.callback(sock.close)
        app = build_http_app(self.services)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard")

        async def stop() -> None:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

        stack.push_async_callback(stop)
        while not server.started and not task.done():
            await asyncio.sleep(0.02)

    # -- what a scenario does ----------------------------------------------------------------------------

    async def deploy(self, ref: str) -> Any:
        """Production deploy of `ref`, asked of the agent as an engineer would, waiting for READY."""
        arguments = {"project": PROJECT, "environment": "production", "branch": ref}
        return await self.services.registry.invoke(PERSON, "deploy", arguments)

    async def install_rules(self, timeout_s: float = 30.0) -> None:
        """The rules, once the series they read exist (a rule on an unknown series is refused)."""
        deadline = time.monotonic() + timeout_s
        series = self.services.alerts.sources.series
        while not set(RULE_SERIES) <= set(await series.names()):
            if time.monotonic() > deadline:
                missing = set(RULE_SERIES) - set(await series.names())
                raise RuntimeError(f"the demo's series never appeared: {', '.join(sorted(missing))}")
            await asyncio.sleep(0.2)
        for name, condition, priority in RULES:
            await self.services.alerts.create_alert_rule(
                name, condition, priority, remediation=Remediation(action="task", task=FIX_TASK), created_by="scenario"
            )

    def write_noise(self, lines: int, error_share: float, n: int) -> None:
        """Benign log lines: cache misses, retried calls, client disconnects; some at error level."""
        with self.noise_path.open("a") as out:
            for i in range(lines):
                error = (n + i) % max(1, round(1 / error_share)) == 0 if error_share else False
                message = ("upstream call to payments retried (attempt 1/3) after 502" if error
                           else ("cache miss for key user:%d" % (n + i)))
                level = "error" if error else ("warning" if i % 3 == 0 else "info")
                out.write('{"time": %.3f, "level": "%s", "service": "%s", "message": "%s"}\n'
                          % (time.time(), level, SERVICE, message))
