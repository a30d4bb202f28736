"""The demo service over HTTP: the app Vercel "deploys", with its log file, /metrics and admin endpoints.

    with DemoService(emu.state, log_path=tmp / "demo.log", versions={"v2-bad": Fault(kind="error_spike")}) as demo:
        demo.base_url            # GET /work (the load), GET /health, GET /metrics
        demo.inject(Fault(kind="disk_fill")); demo.restart(); demo.free_disk(); demo.snapshot()

/_admin/* is what the agent's allow-listed commands reach (through `ctl.py`). Neither it nor /metrics is
written to the log: the agent's view of the service is its traffic, and an injected fault must not announce
itself there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.demo_service.process import MB, Fault, Outcome, Process
from sandbox.threaded_server import ThreadedServer

if TYPE_CHECKING:
    from sandbox.vercel import State

__all__ = ["DemoService", "create_app"]


class _Collector:
    """The gauges and counters of one process, read at scrape time (a per-app registry: no global state)."""

    def __init__(self, process: Process) -> None:
        self.process = process

    def collect(self) -> Iterator[Metric]:
        s = self.process.snapshot()
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of the demo process.", value=s["memory_mb"] * MB
        )
        yield GaugeMetricFamily("demo_disk_used_bytes", "Used bytes of the data volume.", value=s["disk_used_mb"] * MB)
        yield GaugeMetricFamily("demo_disk_total_bytes", "Size of the data volume.", value=s["disk_total_mb"] * MB)
        yield GaugeMetricFamily(
            "demo_disk_used_ratio", "Used share of the data volume, 0..1.", value=s["disk_used_ratio"]
        )
        yield GaugeMetricFamily("demo_up", "1 while the process can serve requests.", value=1 if s["up"] else 0)
        info = GaugeMetricFamily("demo_version_info", "The version being served.", labels=["version", "deployment"])
        if s["deployment"] is not None:
            info.add_metric([s["version"] or "", s["deployment"]], 1)
        yield info
        requests = CounterMetricFamily(
            "demo_requests", "Requests answered, by path and status.", labels=["path", "status"]
        )
        for (path, status), count in sorted(self.process.request_counts().items()):
            requests.add_metric([path, str(status)], count)
        yield requests


def create_app(process: Process) -> Starlette:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(process))

    async def serve(request: Request, decide: Callable[[], Outcome]) -> Response:
        started = time.perf_counter()
        outcome = decide()
        if outcome.delay_s:
            await asyncio.sleep(outcome.delay_s)
        process.finish(request.method, request.url.path, outcome, (time.perf_counter() - started) * 1000)
        return JSONResponse(outcome.body, outcome.status, headers=outcome.headers)

    async def work(request: Request) -> Response:
        return await serve(request, process.work)

    async def health(request: Request) -> Response:
        return await serve(request, process.health)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def restart(request: Request) -> Response:
        return JSONResponse(process.restart())

    async def free_disk(request: Request) -> Response:
        return JSONResponse(process.free_disk())

    async def inject(request: Request) -> Response:
        try:
            fault = Fault.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        process.inject(fault)
        return JSONResponse(process.snapshot())

    async def clear(request: Request) -> Response:
        process.clear(request.query_params.get("kind"))
        return JSONResponse(process.snapshot())

    async def state(request: Request) -> Response:
        return JSONResponse(process.snapshot())

    return Starlette(routes=[
        Route("/work", work, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/_admin/restart", restart, methods=["POST"]),
        Route("/_admin/free-disk", free_disk, methods=["POST"]),
        Route("/_admin/faults", inject, methods=["POST"]),
        Route("/_admin/faults", clear, methods=["DELETE"]),
        Route("/_admin/state", state, methods=["GET"]),
    ])


class DemoService(ThreadedServer):
    """Runs the demo app with uvicorn on 127.0.0.1 in a background thread (sync or async context manager).

    `versions` maps a git ref to the fault a build of it carries (absent or None: healthy). Memory and disk
    are simulated: a memory_leak grows memory until `memory_limit_mb`, then the process is OOM-killed until
    `restart()`; a disk_fill grows disk usage until writes fail, until `free_disk()`."""

    name = "demo service"

    def __init__(
        self, state: State, *, project: str = "demo-app", log_path: Path,
        versions: Mapping[str, Fault | None] | None = None, service: str = "demo", seed: int = 0, port: int = 0,
        memory_limit_mb: float = 1024.0, clock: Callable[[], float] = time.monotonic, log_level: str = "warning",
    ) -> None:
        super().__init__(port=port, log_level=log_level)
        self.process = Process(
            state, project=project, log_path=Path(log_path), versions=versions, service=service, seed=seed,
            memory_limit_mb=memory_limit_mb, clock=clock,
        )
        self.app = create_app(self.process)

    @property
    def admin_url(self) -> str:
        """Where ctl.py points (`--url`): the same server; the admin routes live under /_admin."""
        return self.base_url

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def inject(self, fault: Fault) -> None:
        self.process.inject(fault)

    def clear(self, kind: str | None = None) -> None:
        self.process.clear(kind)

    def restart(self) -> dict[str, Any]:
        return self.process.restart()

    def free_disk(self) -> dict[str, Any]:
        return self.process.free_disk()

    def snapshot(self) -> dict[str, Any]:
        return self.process.snapshot()
