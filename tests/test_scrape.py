"""Scraper against real HTTP servers on loopback sockets, writing into a real MemorySeries.

The /metrics bodies are made by prometheus-client from a private CollectorRegistry, as a service would
expose them; other routes answer 503, garbage, too much, or nothing at all (until the test lets go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx2
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from ops_agent.config import ScrapeTarget
from ops_agent.tools.alerts.condition import evaluate_condition, parse_condition
from ops_agent.tools.monitoring.query import evaluate, parse
from ops_agent.tools.monitoring.scrape import Scraper
from ops_agent.tools.monitoring.series import MemorySeries, SeriesStore

NOW = 1_700_000_000.0
Route = Callable[[], tuple[int, bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        route = self.server.routes.get(urlsplit(self.path).path)
        status, body = route() if route else (404, b"not found\n")
        self.send_response(status)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class MetricsServer(ThreadingHTTPServer):
    """A real HTTP server in a thread, answering GET by path from `routes`; it can stop and start again
    on the same port."""

    daemon_threads = True

    def __init__(self, routes: dict[str, Route], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.routes = routes
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@contextlib.contextmanager
def serving(routes: dict[str, Route]) -> Iterator[MetricsServer]:
    server = MetricsServer(routes)
    try:
        yield server
    finally:
        server.stop()


def registry_route(registry: CollectorRegistry, extra: bytes = b"") -> Route:
    return lambda: (200, generate_latest(registry) + extra)


def fixed(status: int, body: bytes) -> Route:
    return lambda: (status, body)


def hanging(released: threading.Event, body: bytes = b"") -> Route:
    """Answers 200 only once `released` is set (or after 30 s)."""

    def route() -> tuple[int, bytes]:
        released.wait(30)
        return 200, body

    return route


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """Set at teardown: a route waiting on it hangs until the test is over."""
    event = threading.Event()
    yield event
    event.set()


def target(name: str, url: str, **settings: float) -> ScrapeTarget:
    return ScrapeTarget(name=name, url=url, **settings)


async def value(series: SeriesStore, name: str, **labels: str) -> float | None:
    found = await series.latest(name, labels)
    assert len(found) <= 1, found
    return next(iter(found.values())).value if found else None


async def count(series: SeriesStore, name: str, **labels: str) -> int:
    found = await series.points(name, labels, 0, time.time() + 1)
    return sum(len(points) for points in found.values())


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.endswith("scrape") and r.levelno == logging.WARNING]


# -- what lands in the store ------------------------------------------------------------------------------


async def test_gauges_counters_histograms_with_labels_and_job(http):
    registry = CollectorRegistry()
    Gauge("demo_temperature_celsius", "t", ["room"], registry=registry).labels("lab").set(21.5)
    requests = Counter("demo_requests", "r", ["code"], registry=registry)
    requests.labels("200").inc(3)
    latency = Histogram("demo_latency_seconds", "l", buckets=[0.1, 1.0], registry=registry)
    for seconds in (0.05, 0.5, 5):
        latency.observe(seconds)
    Gauge("demo_batch", "pushed by a batch job", ["job"], registry=registry).labels("nightly").set(7)
    stamped = b"demo_stamped 5 1000\n"  # an exposition timestamp (1 s after 1970) is ignored
    series = MemorySeries()
    with serving({"/metrics": registry_route(registry, stamped)}) as server:
        scraper = Scraper([target("demo", f"{server.base}/metrics")], series, http, clock=lambda: NOW)
        result = await scraper.scrape_once(scraper.targets[0])

    assert result.ok and result.error is None and result.skipped == result.dropped == 0
    assert await value(series, "demo_temperature_celsius", room="lab", job="demo") == 21.5
    assert await value(series, "demo_requests_total", code="200", job="demo") == 3
    assert await value(series, "demo_latency_seconds_bucket", le="0.1", job="demo") == 1
    assert await value(series, "demo_latency_seconds_bucket", le="1.0", job="demo") == 2
    assert await value(series, "demo_latency_seconds_bucket", le="+Inf", job="demo") == 3
    assert await value(series, "demo_latency_seconds_count", job="demo") == 3
    assert await value(series, "demo_latency_seconds_sum", job="demo") == pytest.approx(5.55)
    [batch] = await series.latest("demo_batch", {})
    assert dict(batch) == {"job": "demo", "exported_job": "nightly"}  # its own job label is kept aside
    assert await value(series, "demo_batch", exported_job="nightly") == 7
    assert [p.ts for p in (await series.latest("demo_stamped", {})).values()] == [NOW]

    assert await value(series, "up", job="demo") == 1
    assert await value(series, "scrape_samples_scraped", job="demo") >= 10
    assert result.samples == await value(series, "scrape_samples_scraped", job="demo")
    assert 0 <= await value(series, "scrape_duration_seconds", job="demo") < 5


async def test_nan_is_skipped_quietly_and_what_the_store_refuses_is_counted(http, caplog):
    body = (
        b"ok_metric 1\nnan_metric NaN\ninf_metric +Inf\n"
        b":colon_metric 2\n"  # Prometheus allows a leading ':', the series store does not
        b'long_label{path="' + b"x" * 300 + b'"} 3\n'  # label values longer than 256 characters
    )
    series = MemorySeries()
    with serving({"/metrics": fixed(200, body)}) as server:
        scraper = Scraper([target("odd", f"{server.base}/metrics")], series, http)
        first = await scraper.scrape_once(scraper.targets[0])
        second = await scraper.scrape_once(scraper.targets[0])
    assert (first.ok, first.samples, first.skipped) == (True, 1, 2) and second == first
    assert set(await series.names()) == {"ok_metric", "up", "scrape_duration_seconds", "scrape_samples_scraped"}
    assert await value(series, "scrape_samples_scraped", job="odd") == 5
    [warning] = warnings(caplog)  # once, not at every scrape; NaN and Inf are not mentioned
    assert "odd: 2 samples skipped" in warning and "colon_metric" in warning


# -- up, and failures ----------------------------------------------------------------------------------------


async def test_up_follows_the_server_down_and_back(http, caplog):
    registry = CollectorRegistry()
    Gauge("demo_value", "v", registry=registry).set(1)
    series = MemorySeries()
    server = MetricsServer({"/metrics": registry_route(registry)})
    port = server.server_address[1]
    scraper = Scraper([target("demo", f"{server.base}/metrics", timeout_s=2)], series, http)
    demo = scraper.targets[0]
    try:
        assert (await scraper.scrape_once(demo)).ok and await value(series, "up", job="demo") == 1
        server.stop()
        down = await scraper.scrape_once(demo)
        assert not down.ok and "connection refused" in down.error
        assert await value(series, "up", job="demo") == 0
        assert await value(series, "scrape_samples_scraped", job="demo") == 0
        await scraper.scrape_once(demo)  # still down: no second warning
        server = MetricsServer({"/metrics": registry_route(registry)}, port=port)
        assert (await scraper.scrape_once(demo)).ok and await value(series, "up", job="demo") == 1
    finally:
        server.stop()
    [ups] = (await series.points("up", {"job": "demo"}, 0, time.time() + 1)).values()
    assert [p.value for p in ups] == [1, 0, 0, 1]
    where = f"scrape target demo (http://127.0.0.1:{port}/metrics)"
    assert warnings(caplog) == [
        f"{where} is down: ConnectError: connection refused or host unreachable",
        f"{where} is up again",
    ]


async def test_failures_say_why_without_the_query_string_or_credentials(http, caplog, released):
    routes = {
        "/broken": fixed(503, b"maintenance\n"),
        "/garbage": fixed(200, b"<html>you asked for ?token=secret123</html>\n"),
        "/huge": fixed(200, b"big_metric 1\n" * 1000),
        "/hang": hanging(released),
    }
    caplog.set_level(logging.WARNING, logger="httpx2")  # as ops-agent's logging setup does: it logs whole URLs
    series = MemorySeries()
    with serving(routes) as server:
        base = server.base.replace("http://", "http://scraper:hunter2pass@")
        targets = [target(path.strip("/"), f"{base}{path}?token=secret123", timeout_s=0.5) for path in routes]
        scraper = Scraper(targets, series, http, max_body_bytes=5000)
        results = {t.name: await scraper.scrape_once(t) for t in targets}

    assert results["broken"].error == "HTTP 503"
    assert results["garbage"].error.startswith("unparsable body (ValueError: invalid metric name")
    assert results["huge"].error == "the body is larger than 5000 bytes"
    assert results["hang"].error == "no answer within 0.5 s"
    for name, result in results.items():
        assert not result.ok and await value(series, "up", job=name) == 0
    logged = warnings(caplog)
    assert len(logged) == 4 and f"broken ({server.base}/broken) is down: HTTP 503" in logged[0]
    for secret in ("secret123", "token=", "hunter2pass", "scraper:"):
        assert secret not in caplog.text and all(secret not in (r.error or "") for r in results.values())


async def test_samples_over_the_cap_are_dropped_and_counted(http, caplog):
    body = b"".join(b'many{i="%d"} %d\n' % (i, i) for i in range(25))
    series = MemorySeries()
    with serving({"/metrics": fixed(200, body)}) as server:
        scraper = Scraper([target("many", f"{server.base}/metrics")], series, http, max_samples=10)
        results = [await scraper.scrape_once(scraper.targets[0]) for _ in range(2)]
    assert all(r.ok and (r.samples, r.dropped) == (10, 15) for r in results)
    assert len(await series.latest("many", {})) == 10
    assert await value(series, "scrape_samples_scraped", job="many") == 25
    assert warnings(caplog) == ["scrape target many exposes more than 10 samples; 15 were dropped"]


def test_target_names_must_be_unique(http):
    twice = [target("a", "http://127.0.0.1:1/metrics"), target("a", "http://127.0.0.1:2/metrics")]
    with pytest.raises(ValueError, match="duplicate scrape target names: a"):
        Scraper(twice, MemorySeries(), http)


# -- the background loop -------------------------------------------------------------------------------------


async def _until(probe: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe() and time.monotonic() < deadline:  # type: ignore[misc]
        await asyncio.sleep(0.02)


async def test_a_slow_target_does_not_delay_a_fast_one(http, released):
    routes = {
        "/fast": fixed(200, b"fast_metric 1\n"),
        "/slow": hanging(released, b"slow_metric 1\n"),
    }
    series = MemorySeries()
    with serving(routes) as server:
        scraper = Scraper(
            [target("slow", f"{server.base}/slow", interval_s=0.2, timeout_s=60),
             target("fast", f"{server.base}/fast", interval_s=0.2)],
            series, http,
        )
        task = asyncio.create_task(scraper.run())

        async def scraped_fast() -> bool:
            return await count(series, "up", job="fast") >= 5

        try:
            await _until(scraped_fast)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # five scrapes of the fast target while the slow target's first scrape still waits for an answer
    assert await count(series, "fast_metric", job="fast") >= 5
    assert await count(series, "up", job="slow") == 0 and "slow" not in scraper.last


async def test_the_loop_survives_a_store_that_refuses_writes(http, caplog):
    series = MemorySeries(max_series=2)  # too small even for up and the scrape_* series
    with serving({"/metrics": fixed(200, b"a 1\nb 2\nc 3\n")}) as server:
        scraper = Scraper([target("demo", f"{server.base}/metrics", interval_s=0.2)], series, http)
        task = asyncio.create_task(scraper.run())

        async def failed_twice() -> bool:
            return sum("failed unexpectedly" in r.getMessage() for r in caplog.records) >= 2

        try:
            await _until(failed_twice)
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert await failed_twice()
    assert any("3 samples skipped; the first: too many series" in w for w in warnings(caplog))


# -- read back as queries and alert conditions read them ----------------------------------------------------


class _SeriesOnly:
    """What a condition on series alone reads (no health checks or logs are involved)."""

    def __init__(self, series: SeriesStore) -> None:
        self.series = series


async def test_scraped_series_answer_queries_and_alert_conditions(http):
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_resident_memory_bytes and friends, of this process
    requests = Counter("demo_requests", "r", registry=registry)
    series = MemorySeries()
    server = MetricsServer({"/metrics": registry_route(registry)})
    scraper = Scraper([target("demo", f"{server.base}/metrics")], series, http)
    try:
        for _ in range(2):
            requests.inc(10)
            assert (await scraper.scrape_once(scraper.targets[0])).ok
            await asyncio.sleep(0.05)
    finally:
        server.stop()

    async def query(text: str) -> float | bool | None:
        return (await evaluate(parse(text), series, now=time.time())).value

    assert await query('process_resident_memory_bytes{job="demo"} > 100') is True
    assert await query('process_resident_memory_bytes{job="other"} > 100') is None  # no data, not False
    assert await query('increase(demo_requests_total{job="demo"}[1m])') > 0
    assert await query('up{job="demo"}') == 1

    down = parse_condition('up{job="demo"} == 0 for 30s')
    assert down.for_s == 30
    assert (await evaluate_condition(down, _SeriesOnly(series), now=time.time())).breached is False
    await scraper.scrape_once(scraper.targets[0])  # the server is gone now
    result = await evaluate_condition(down, _SeriesOnly(series), now=time.time())
    assert result.breached is True and result.summary == 'up{job="demo"} = 0 == 0'
