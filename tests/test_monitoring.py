"""MonitoringTool against the real host (psutil) and real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest

from ops_agent.config import ServiceCheck
from ops_agent.errors import ToolRetry
from ops_agent.tools.monitoring import MonitoringTool


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(2)
        status = {"/health": 200, "/slow": 200, "/broken": 503, "/created": 201}.get(self.path, 404)
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def local_http_server() -> Iterator[str]:
    """A real HTTP server on a free loopback port, in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def base_url() -> Iterator[str]:
    with local_http_server() as url:
        yield url


@pytest.fixture
async def http() -> httpx2.AsyncClient:
    async with httpx2.AsyncClient() as client:
        yield client


async def test_system_metrics_are_real_and_plausible(http):
    tool = MonitoringTool([], http)
    first = await tool.get_system_metrics()
    assert 0 <= first.cpu_percent <= 100 and first.cpu_count >= 1
    assert first.memory_total_bytes > first.memory_used_bytes > 0
    assert 0 < first.memory_percent < 100
    assert first.disks[0].mount == "/" and first.disks[0].total_bytes > 0
    assert first.process_count > 1 and first.uptime_s > 0
    assert len(first.load_average) == 3


async def test_cpu_readings_never_sleep_and_cover_a_real_window(http):
    tool = MonitoringTool([], http)
    started = time.perf_counter()
    readings = [await tool.get_system_metrics() for _ in range(20)]
    assert time.perf_counter() - started < 2  # no interval sleep per call (loose bound: a shared machine)
    assert all(reading.cpu_window_s > 0 for reading in readings)
    await asyncio.sleep(0.3)
    later = await tool.get_system_metrics()
    assert 0.25 <= later.cpu_window_s < 60


async def test_event_loop_stays_free_while_sampling(http):
    tool = MonitoringTool([], http)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(tool.get_system_metrics() for _ in range(10)))
    task.cancel()
    assert ticks > 10  # the loop ran other work while psutil read /proc on a thread


async def test_health_of_every_service_at_once(http, base_url):
    services = [
        ServiceCheck(name="api", url=f"{base_url}/health"),
        ServiceCheck(name="jobs", url=f"{base_url}/created", expected_status=201),
        ServiceCheck(name="web", url=f"{base_url}/broken"),
        ServiceCheck(name="gone", url="http://127.0.0.1:9/health", timeout_s=2),
        ServiceCheck(name="slow", url=f"{base_url}/slow", timeout_s=0.3),
    ]
    tool = MonitoringTool(services, http)
    started = time.perf_counter()
    report = await tool.check_service_health()
    elapsed = time.perf_counter() - started
    by_name = {service.name: service for service in report.services}
    assert (report.healthy, report.unhealthy) == (2, 3)
    assert by_name["api"].status == "up" and by_name["api"].http_status == 200 and by_name["api"].latency_ms > 0
    assert by_name["jobs"].status == "up"
    assert by_name["web"].status == "down" and by_name["web"].error == "expected HTTP 200, got 503"
    assert by_name["gone"].status == "down" and "connection failed" in by_name["gone"].error
    assert by_name["slow"].status == "down" and by_name["slow"].error == "no answer within 0.3 s"
    assert elapsed < 1.9  # concurrent: the slow one costs its own timeout, not a sum


async def test_one_service_and_unknown_service(http, base_url):
    tool = MonitoringTool([ServiceCheck(name="api", url=f"{base_url}/health")], http)
    report = await tool.check_service_health("api")
    assert [s.name for s in report.services] == ["api"]
    with pytest.raises(ToolRetry, match="unknown service 'nope'; configured services: api"):
        await tool.check_service_health("nope")


async def test_no_services_configured_is_said_plainly(http):
    report = await MonitoringTool([], http).check_service_health()
    assert report.services == [] and "no services are configured" in report.note


async def test_credentials_in_a_service_url_never_show(http, base_url):
    url = base_url.replace("http://", "http://admin:hunter2secret@") + "/health"
    report = await MonitoringTool([ServiceCheck(name="api", url=url)], http).check_service_health()
    assert "hunter2secret" not in report.model_dump_json()
    assert report.services[0].url == f"{base_url}/health"
