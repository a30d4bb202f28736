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
from ops_agent.tools.monitoring.query import QueryError
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


async def test_readings_never_sleep_and_cover_a_real_window(http):
    tool = MonitoringTool([], http, sample_interval_s=0.1)
    first = await tool.get_system_metrics()
    assert first.disk_read_bytes_per_s is None  # no window yet: no rates, CPU since boot
    started = time.perf_counter()
    readings = [await tool.get_system_metrics() for _ in range(20)]
    assert time.perf_counter() - started < 2  # answered from the latest sample (loose bound: a shared machine)
    assert all(reading is first for reading in readings)
    await asyncio.sleep(0.3)
    later = await tool.get_system_metrics()
    assert 0.25 <= later.cpu_window_s < 60
    assert len(later.cpu_per_core) == later.cpu_count
    assert later.disk_read_bytes_per_s is not None and later.net_recv_bytes_per_s is not None
    assert later.top_cpu and later.top_memory and later.process_count > 1
    assert all(disk.total_bytes > 0 for disk in later.disks)


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
    assert by_name["gone"].status == "down" and "connection refused" in by_name["gone"].error
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
    assert report.services[0].target == f"{base_url}/health"


async def test_tcp_checks_and_body_matches(http, base_url):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        services = [
            ServiceCheck(name="db", tcp=f"127.0.0.1:{listener.getsockname()[1]}"),
            ServiceCheck(name="cache", tcp=f"127.0.0.1:{closed_port}", timeout_s=2),
            ServiceCheck(name="api", url=f"{base_url}/health", body_contains='"ok": true'),
            ServiceCheck(name="api-wrong-body", url=f"{base_url}/health", body_contains="ready"),
        ]
        report = await MonitoringTool(services, http).check_service_health()
    finally:
        listener.close()
    by_name = {service.name: service for service in report.services}
    assert by_name["db"].status == "up" and by_name["db"].target.startswith("127.0.0.1:")
    assert by_name["cache"].status == "down" and "cannot connect" in by_name["cache"].error
    assert by_name["api"].status == "up"
    assert by_name["api-wrong-body"].status == "down" and "does not contain 'ready'" in by_name["api-wrong-body"].error


async def test_uptime_failures_in_a_row_and_latency_percentiles(http, base_url):
    tool = MonitoringTool(
        [ServiceCheck(name="api", url=f"{base_url}/health"), ServiceCheck(name="web", url=f"{base_url}/broken")], http
    )
    for _ in range(4):
        report = await tool.check_service_health()
    api, web = report.services
    assert (api.uptime_percent, api.consecutive_failures) == (100.0, 0)
    assert (web.uptime_percent, web.consecutive_failures) == (0.0, 4)
    assert api.latency_p50_ms is not None and api.latency_p50_ms <= api.latency_p95_ms <= api.latency_p99_ms
    assert web.latency_p50_ms is None  # only answers that were up count toward latency


async def test_the_background_loop_probes_each_service_on_its_interval(http, base_url):
    from ops_agent.tools.monitoring.series import MemorySeries

    series = MemorySeries()
    tool = MonitoringTool(
        [ServiceCheck(name="fast", url=f"{base_url}/health", interval_s=1),
         ServiceCheck(name="slow", url=f"{base_url}/health", interval_s=3600)],
        http, sample_interval_s=0.5, series=series,
    )

    async def probes(service: str) -> int:
        found = await series.points("service_up", {"service": service}, 0, time.time() + 1)
        return sum(len(points) for points in found.values())

    task = asyncio.create_task(tool.run())
    try:
        for _ in range(100):
            if await probes("fast") >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await probes("fast") >= 2 and await probes("slow") == 1
    assert tool.health.last("fast").status == "up"
    assert "system_cpu_percent" in await series.names()  # samples are recorded on their own interval too


def _make_certificates(directory) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 valid 30 days, made with the openssl command line."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "365", "-subj", "/CN=test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "30", "-extfile", "ext.cnf")
    return str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "server.key")


async def test_tls_days_left(tmp_path):
    import ssl

    ca, certificate, key = _make_certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/health"
        async with httpx2.AsyncClient() as http:  # the default trust store: the service's own CA file is used
            tool = MonitoringTool([ServiceCheck(name="secure", url=url, tls_ca_file=ca)], http)
            report = await tool.check_service_health()
            await tool.aclose()
    finally:
        server.shutdown()
        server.server_close()
    [secure] = report.services
    assert secure.status == "up", secure.error
    assert 28 < secure.tls_days_left <= 30


async def test_samples_and_probes_land_in_the_series_store(tmp_path, base_url):
    from ops_agent.config import load_settings
    from ops_agent.services import open_services

    config = tmp_path / "c.yaml"
    config.write_text(
        f"storage:\n  path: {tmp_path / 'db.sqlite'}\nmonitoring:\n  sample_interval_s: 0.5\n"
        f"services:\n  - {{name: api, url: '{base_url}/health', interval_s: 1}}\n"
    )
    async with open_services(load_settings(config, environ={})) as services:
        for _ in range(100):  # the background loop samples and probes right away
            names = await services.monitoring.series.names()
            if "service_up" in names and "system_cpu_percent" in names:
                break
            await asyncio.sleep(0.05)
        await services.registry.invoke(
            services.identity, "record_metric", {"name": "checkout_ms", "value": 120, "labels": {"route": "/pay"}}
        )
        now = time.time()
        pushed = await services.monitoring.series.points("checkout_ms", {"route": "/pay"}, now - 60, now + 1)
        up = await services.monitoring.series.latest("service_up", {"service": "api"})
        with pytest.raises(Exception, match="name"):
            await services.registry.invoke(services.identity, "record_metric", {"name": "bad name!", "value": 1})
        score = (await services.gate.agent(services.identity)).score
    assert {"system_cpu_percent", "system_memory_percent", "system_disk_percent", "service_up"} <= set(names)
    assert [point.value for series in pushed.values() for point in series] == [120.0]
    assert [point.value for point in up.values()] == [1.0]
    assert score == 100  # recording data never earns reputation


async def test_custom_metrics_queries_and_performance(services):
    invoke, me = services.registry.invoke, services.identity
    now = time.time()
    for i, latency in enumerate([10, 20, 30, 40, 500]):
        await invoke(me, "record_metric", {"name": "response_time_ms", "value": latency, "labels": {"service": "api"}, "ts": now - 10 + i})
    await invoke(me, "record_metric", {"name": "response_time", "value": 42, "ts": now - 1})
    await invoke(me, "record_metric", {"name": "errors", "value": 3, "ts": now - 1})
    await invoke(me, "record_metric", {"name": "requests", "value": 60, "ts": now - 1})

    # the seed's own example, without a window (the last 5 minutes)
    latency = await invoke(me, "add_custom_metric", {"name": "api_latency", "query": "avg(response_time)"})
    assert (latency.value, latency.query) == (42, "avg(response_time[5m])")
    ratio = await invoke(me, "add_custom_metric", {"name": "error_rate", "query": "errors / requests * 100"})
    assert ratio.value == 5.0
    listed = await invoke(me, "get_custom_metrics", {})
    assert [m.name for m in listed.metrics] == ["api_latency", "error_rate"]

    with pytest.raises(QueryError) as unknown:
        await invoke(me, "add_custom_metric", {"name": "x", "query": "avg(respnse_time[5m])"})
    assert "unknown series 'respnse_time'" in unknown.value.public_message
    assert unknown.value.position == 4 and "\n      ^" in unknown.value.public_message
    with pytest.raises(QueryError, match="at position"):
        await invoke(me, "query_metrics", {"query": "avg(response_time[5m]"})
    with pytest.raises(ToolRetry, match="exists already"):
        await invoke(me, "add_custom_metric", {"name": "api_latency", "query": "avg(response_time)"})

    p95 = await invoke(me, "query_metrics", {"query": 'p95(response_time_ms{service="api"}[1m]) > 100'})
    assert p95.value is True and p95.series == ["response_time_ms"]
    report = await invoke(me, "get_performance_metrics", {"service": "api", "window_s": 60})
    [api] = report.services
    assert (api.source, api.samples, api.p50_ms) == ("response_time_ms", 5, 30.0)
    assert api.p99_ms > 400 and api.throughput_per_s == round(5 / 60, 3)
    assert (await services.gate.agent(me)).score == 100  # defining and pushing data never scores


async def test_custom_metrics_survive_a_restart(settings):
    from ops_agent.services import open_services

    async with open_services(settings) as first:
        await first.registry.invoke(first.identity, "record_metric", {"name": "queue_depth", "value": 7})
        await first.registry.invoke(first.identity, "add_custom_metric", {"name": "depth", "query": "max(queue_depth[1h])"})
    async with open_services(settings) as second:
        [depth] = (await second.registry.invoke(second.identity, "get_custom_metrics", {"name": "depth"})).metrics
    assert depth.value == 7 and depth.created_by == "ops_agent"
