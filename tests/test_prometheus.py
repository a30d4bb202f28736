"""PrometheusClient and prometheus_value against a real Prometheus (Debian's `prometheus` package), started
here in a temporary directory and scraping ops-agent's own /metrics: the MCP HTTP app built by
`mcp_server.build_http_app`, under uvicorn in a thread, on a loopback port. So the story is end to end:
a tool call passes the gate, the gate's counter moves, Prometheus scrapes it, PromQL reads it back.

Without /usr/bin/prometheus the tests that need it skip, except under CI (the CI variable set), where
scripts/ci-packages installs it and its absence is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from mcp_server import build_http_app
from ops_agent.config import load_settings
from ops_agent.errors import ToolRetry, UpstreamError, UpstreamTimeout
from ops_agent.services import Services, open_services
from ops_agent.tools.monitoring.metric_value import MetricValue
from ops_agent.tools.monitoring.prometheus import (
    PromQLError,
    PrometheusClient,
    prometheus_value,
    promql_series,
)
from tests.processes import free_port, missing, stop, wait_until_ready

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
STARTUP_TIMEOUT_S = 20.0
SCRAPED_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
JOB = "ops-agent"
TOKEN = "prom-token-do-not-show-0123456789"
PASSWORD = "prom-password-do-not-show-9876543210"


# -- ops-agent's /metrics, served for real ----------------------------------------------------------------


@dataclass
class OpsAgentTarget:
    """ops-agent's HTTP app under uvicorn, in a thread with its own event loop."""

    directory: Path
    sock: socket.socket = field(init=False)
    loop: asyncio.AbstractEventLoop | None = None
    services: Services | None = None
    server: uvicorn.Server | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))  # bound here, so the port is ours before the thread starts
        self.thread = threading.Thread(target=self._run, name="ops-agent-target", daemon=True)

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.sock.getsockname()[1]

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 (reported by start(); uvicorn exits with SystemExit)
            self.error = exc

    async def _serve(self) -> None:
        settings = load_settings(environ={"OPS_AGENT_DB": str(self.directory / "ops-agent.db")})
        async with open_services(settings) as services:
            self.services, self.loop = services, asyncio.get_running_loop()
            config = uvicorn.Config(build_http_app(services), log_level="warning", lifespan="on")
            self.server = uvicorn.Server(config)
            await self.server.serve(sockets=[self.sock])

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (self.server is not None and self.server.started):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ops-agent's HTTP app did not start: {self.error!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=STOP_TIMEOUT_S)
        self.sock.close()

    async def invoke(self, tool: str, arguments: dict[str, Any]) -> Any:
        """A tool call through the gate, run on the server's own loop."""
        assert self.services is not None and self.loop is not None
        call = self.services.registry.invoke(self.services.identity, tool, arguments)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self.loop))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsAgentTarget]:
    served = OpsAgentTarget(tmp_path_factory.mktemp("ops-agent"))
    served.start()
    try:
        yield served
    finally:
        served.stop()


# -- a real Prometheus -------------------------------------------------------------------------------------






def _sample(base: str, promql: str) -> float | None:
    """The single value of an instant query, straight from the API (the fixture does not use our client)."""
    body = httpx2.post(f"{base}/api/v1/query", data={"query": promql}, timeout=2).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    if not os.path.exists(PROMETHEUS):
        missing(f"{PROMETHEUS} not found: install Debian's prometheus package (scripts/ci-packages)")
    return PROMETHEUS


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory, target: OpsAgentTarget
) -> Iterator[str]:
    """Prometheus on a loopback port scraping ops-agent every second; yields its base URL once the target
    is up and has been scraped at least twice."""
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        f"    static_configs: [{{targets: ['{target.address}']}}]\n",
        encoding="utf-8",
    )
    base = f"http://127.0.0.1:{free_port()}"
    log = directory / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address={base.removeprefix('http://')}", "--web.enable-lifecycle"],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    wait_until_ready(process, f"{base}/-/ready", log, STARTUP_TIMEOUT_S)
    try:
        deadline = time.monotonic() + SCRAPED_TIMEOUT_S
        while not (
            _sample(base, f'up{{job="{JOB}"}}') == 1
            and (_sample(base, f'count_over_time(up{{job="{JOB}"}}[1m])') or 0) >= 2
        ):
            if time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"ops-agent not scraped twice within {SCRAPED_TIMEOUT_S} s:\n{tail}")
            time.sleep(0.1)
        yield base
    finally:
        stop(process)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


@pytest.fixture
def client(prometheus: str, http: httpx2.AsyncClient) -> PrometheusClient:
    return PrometheusClient(http, prometheus, timeout_s=5)


def _scraped_directly(target: OpsAgentTarget, name: str) -> dict[tuple, float]:
    text = httpx2.get(f"http://{target.address}/metrics", timeout=5).text
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


# -- against the real Prometheus ----------------------------------------------------------------------------


async def test_instant_query_returns_the_scraped_value(client: PrometheusClient, target: OpsAgentTarget):
    direct = _scraped_directly(target, "ops_agent_reputation_score")
    assert list(direct) == [(("agent", "ops_agent"),)]  # one agent, whose score no test here moves

    result = await client.query(f'ops_agent_reputation_score{{job="{JOB}"}}')

    assert result.result_type == "vector" and not result.no_data
    assert result.value == direct[(("agent", "ops_agent"),)]
    [sample] = result.samples
    assert sample.labels == {
        "__name__": "ops_agent_reputation_score", "agent": "ops_agent", "instance": target.address, "job": JOB
    }
    assert abs((datetime.now(UTC) - result.evaluated_at).total_seconds()) < 300

    metric = await prometheus_value(client, '  ops_agent_reputation_score{agent="ops_agent"} ')
    assert isinstance(metric, MetricValue)
    assert (metric.query, metric.value, metric.no_data) == (
        'ops_agent_reputation_score{agent="ops_agent"}', result.value, False
    )
    assert metric.series == ["ops_agent_reputation_score"]


async def test_rate_of_a_counter_moved_by_tool_calls(client: PrometheusClient, target: OpsAgentTarget):
    promql = 'sum(rate(ops_agent_tool_calls_total{tool="get_system_metrics", decision="allowed"}[10s]))'
    deadline = time.monotonic() + 15
    while True:
        await target.invoke("get_system_metrics", {})  # the gate counts it; the next scrape shows it
        metric = await prometheus_value(client, promql)
        if metric.value or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert metric.value is not None and metric.value > 0, metric
    assert metric.series == ["ops_agent_tool_calls_total"]
    increase = await client.query(promql.replace("rate(", "increase("))
    assert increase.value is not None and increase.value > 0


async def test_an_empty_result_is_no_data_not_zero(client: PrometheusClient):
    result = await client.query('ops_agent_reputation_score{agent="nobody"}')
    assert (result.result_type, result.value, result.no_data, result.samples) == ("vector", None, True, [])

    metric = await prometheus_value(client, 'ops_agent_reputation_score{agent="nobody"}')
    assert (metric.value, metric.no_data) == (None, True)

    nan = await client.query("0 / 0")  # NaN, like our language's division by zero: no data
    assert (nan.result_type, nan.value, nan.no_data) == ("scalar", None, True)

    before = time.time() - 7 * 86400  # a week ago, before this Prometheus existed
    past = await client.query(f'up{{job="{JOB}"}}', at=before)
    assert past.no_data and past.evaluated_at.timestamp() == pytest.approx(before, abs=0.001)


async def test_a_syntax_error_comes_back_as_prometheus_explains_it(client: PrometheusClient):
    promql = 'sum(rate(ops_agent_tool_calls_total[1m]) by'
    with pytest.raises(PromQLError) as caught:
        await client.query(promql)
    error = caught.value
    assert isinstance(error, ToolRetry) and not isinstance(error, UpstreamError)
    assert error.error_type == "bad_data" and error.query == promql
    assert "1:" in error.public_message and "parse error" in error.public_message, error.public_message
    assert "Traceback" not in error.public_message and error.__cause__ is None

    with pytest.raises(PromQLError, match="parse error"):
        await prometheus_value(client, "up +")

    # A query that parses but cannot run (many-to-many matching) is the caller's to fix too.
    with pytest.raises(PromQLError, match="many-to-many") as caught:
        await client.query("ops_agent_budget_used_ratio + on() ops_agent_budget_used_ratio")
    assert caught.value.error_type == "execution"


async def test_several_series_or_a_range_ask_the_caller_to_aggregate(client: PrometheusClient):
    result = await client.query(f'ops_agent_budget_used_ratio{{job="{JOB}"}}')
    assert len(result.samples) == 4 and result.value is None and not result.no_data  # hour|day x tokens|usd

    with pytest.raises(ToolRetry, match=r"returns 4 series .*sum\(") as caught:
        await prometheus_value(client, "ops_agent_budget_used_ratio")
    assert 'window="hour"' in caught.value.public_message
    assert (await prometheus_value(client, "max(ops_agent_budget_used_ratio)")).value == 0

    matrix = await client.query(f'up{{job="{JOB}"}}[30s]')
    assert matrix.result_type == "matrix" and len(matrix.series) == 1 and len(matrix.series[0].points) >= 2
    with pytest.raises(ToolRetry, match="range vector"):
        await prometheus_value(client, f'up{{job="{JOB}"}}[30s]')


async def test_query_range_and_series_names(client: PrometheusClient):
    now = time.time()
    [series] = await client.query_range(f'up{{job="{JOB}"}}', now - 30, now, 1)
    assert series.labels == {"__name__": "up", "instance": series.labels["instance"], "job": JOB}
    assert len(series.points) >= 2 and {value for _, value in series.points} == {1.0}
    assert all(now - 30.001 <= ts <= now + 0.001 for ts, _ in series.points)  # start and end go in ms

    with pytest.raises(PromQLError, match="end timestamp must not be before start"):
        await client.query_range("up", now, now - 30, 1)

    names = await client.series_names()
    assert {"up", "ops_agent_reputation_score", "ops_agent_tool_calls_total"} <= set(names)
    assert names == sorted(names)


# -- failures that need no Prometheus -------------------------------------------------------------------------


async def test_prometheus_down_is_an_upstream_error_naming_it(http: httpx2.AsyncClient):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
    client = PrometheusClient(http, closed, timeout_s=2, bearer_token=TOKEN)
    for call in (client.query("up"), client.query_range("up", 0, 60, 15), client.series_names()):
        with pytest.raises(UpstreamError) as caught:
            await call
        error = caught.value
        assert not isinstance(error, ToolRetry)
        assert error.service == "prometheus" and error.retryable
        assert error.public_message.startswith("prometheus: cannot connect"), error.public_message
        assert TOKEN not in error.public_message


async def test_a_prometheus_that_does_not_answer_times_out(http: httpx2.AsyncClient):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts the connection; nobody ever answers
        client = PrometheusClient(http, "http://127.0.0.1:%d" % silent.getsockname()[1], timeout_s=0.2)
        with pytest.raises(UpstreamTimeout, match="^prometheus: POST /api/v1/query .* timed out"):
            await client.query("up")


class _NotPrometheus(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self.do_POST()

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        _NotPrometheus.seen.append(self.headers.get("authorization", ""))
        body = b"404 page not found\n"
        self.send_response(404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_server_that_is_not_prometheus_is_named_and_no_secret_leaks(http: httpx2.AsyncClient):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    where = f"127.0.0.1:{server.server_address[1]}"
    try:
        with_token = PrometheusClient(http, f"http://{where}/", bearer_token=TOKEN)
        with pytest.raises(UpstreamError, match="HTTP 404 without Prometheus's JSON answer; is the URL") as caught:
            await with_token.query("up")
        with_password = PrometheusClient(http, f"http://scraper:{PASSWORD}@{where}")
        with pytest.raises(UpstreamError, match="HTTP 404") as caught_too:
            await with_password.series_names()
    finally:
        server.shutdown()
        server.server_close()
    assert _NotPrometheus.seen[0] == f"Bearer {TOKEN}"  # the token is sent...
    assert _NotPrometheus.seen[1].startswith("Basic ")  # ...and so are credentials in the URL...
    for error in (caught.value, caught_too.value):  # ...and neither is shown
        assert TOKEN not in error.public_message and PASSWORD not in error.public_message
        assert where in error.public_message and error.status_code == 404 and not error.retryable


@pytest.mark.parametrize(
    ("promql", "names"),
    [
        ("up", ["up"]),
        ('sum by (service) (rate(http_requests_total{code=~"5..", job="api"}[5m]))', ["http_requests_total"]),
        ("sum(rate(errors_total[5m])) / sum(rate(requests_total[5m])) * 100 > bool 5",
         ["errors_total", "requests_total"]),
        ('{__name__="node:cpu:ratio", mode!="idle"} offset 5m', ["node:cpu:ratio"]),
        ("histogram_quantile(0.95, sum without (pod) (rate(lat_bucket[1m]))) @ end()", ["lat_bucket"]),
        ('a + on(job) group_left(x) b unless c or vector(1e3) # "d" is a comment', ["a", "b", "c"]),
        ('label_replace(x, "dst", "$1", "src", "(by|on)")', ["x"]),
        ("time() - 0x1F", []),
    ],
)
def test_series_names_are_read_from_promql_best_effort(promql: str, names: list[str]):
    assert promql_series(promql) == names


async def test_promql_through_the_governed_tools(prometheus: str, tmp_path):
    from ops_agent.config import load_settings
    from ops_agent.errors import ToolRetry
    from ops_agent.services import open_services

    config = tmp_path / "promql.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'ops.db'}\nmonitoring:\n  prometheus_url: {prometheus}\n")
    async with open_services(load_settings(config, environ={})) as services:
        invoke, me = services.registry.invoke, services.identity
        up = await invoke(me, "query_metrics", {"query": "sum(up)", "language": "promql"})
        assert up.value >= 1 and not up.no_data and up.series == ["up"]
        defined = await invoke(me, "add_custom_metric", {"name": "targets_up", "query": "sum(up)", "language": "promql"})
        assert defined.language == "promql" and defined.value >= 1
        [listed] = (await invoke(me, "get_custom_metrics", {"name": "targets_up"})).metrics
        assert listed.language == "promql"
        with pytest.raises(ToolRetry, match="parse error"):
            await invoke(me, "query_metrics", {"query": "sum(up", "language": "promql"})
    async with open_services(load_settings(environ={"OPS_AGENT_DB": str(tmp_path / "other.db")})) as services:
        with pytest.raises(ToolRetry, match="set monitoring.prometheus_url"):
            await services.registry.invoke(services.identity, "query_metrics", {"query": "up", "language": "promql"})
