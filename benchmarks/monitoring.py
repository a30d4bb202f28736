"""Monitoring speed, side by side in one run.

1. `get_system_metrics` round trip through MCP vs a no-op tool registered the same way, both through the
   whole gate; p50/p99 and the ratio (goal <= 1.5x; the seed asks < 100 ms). Over stdio (a server
   subprocess), then in process, with and without the SDK client's own output-schema validation (which
   alone costs more than a whole in-process no-op call).
2. 100 health checks at once against local HTTP endpoints, one of which hangs: total time vs the check
   timeout (goal <= 1.2x the timeout: a hanging service costs its own timeout, not everyone's).

    python benchmarks/monitoring.py [--calls 500] [--timeout-s 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp import Client  # noqa: E402
from mcp.types import ToolAnnotations  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from mcp_server import build_server  # noqa: E402
from ops_agent.config import ServiceCheck, load_settings  # noqa: E402
from ops_agent.governance.rate_limit import RateLimiter, RateLimits  # noqa: E402
from ops_agent.registry import ToolInput, ToolSpec  # noqa: E402
from ops_agent.services import open_services  # noqa: E402


class _NoopInput(ToolInput):
    pass


class _Done(BaseModel):
    ok: bool


async def _noop(args: _NoopInput, ctx) -> _Done:
    return _Done(ok=True)


NOOP = ToolSpec(
    name="noop", description="does nothing", input_model=_NoopInput, output_model=_Done, handler=_noop,
    actions=("read",), annotations=ToolAnnotations(read_only_hint=True),
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def compare(client: Client, calls: int, title: str) -> None:
    """noop and get_system_metrics through one client, in alternating blocks (so noise on this shared
    machine hits both alike), then p50/p99 and the ratio."""
    times: dict[str, list[float]] = {"noop": [], "get_system_metrics": []}
    for tool in times:  # warm up
        for _ in range(20):
            await client.call_tool(tool, {})
    block = max(1, calls // 20)
    for index in range(20):
        for tool in list(times) if index % 2 == 0 else list(reversed(times)):
            for _ in range(block):
                started = time.perf_counter()
                result = await client.call_tool(tool, {})
                times[tool].append(time.perf_counter() - started)
                assert not result.is_error, result.content
    noop, metrics = times["noop"], times["get_system_metrics"]
    ratio = statistics.median(metrics) / statistics.median(noop)
    print(f"{title}, {len(noop)} calls each:")
    for name, values in times.items():
        print(f"  {name:<18}  p50 {statistics.median(values) * 1000:7.3f} ms   p99 {percentile(values, 99) * 1000:7.3f} ms")
    print(f"  ratio at p50: {ratio:.2f}x   [{'met' if ratio <= 1.5 else 'NOT MET'}] goal <= 1.5x;"
          f" [{'met' if percentile(metrics, 99) < 0.1 else 'NOT MET'}] seed: < 100 ms\n")


async def round_trips_stdio(calls: int, workdir: Path) -> None:
    """Over a real transport: the governed server of mcp_overhead.py (which adds the no-op tool) as a
    stdio subprocess; the SDK client validates results as any client does."""
    from mcp import StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable,
        args=[str(Path(__file__).with_name("mcp_overhead.py")), "--serve", "governed", "--transport", "stdio",
              "--db", str(workdir / "stdio.db")],
    )
    async with Client(server) as client:
        await compare(client, calls, "MCP round trip over stdio (a server subprocess)")


async def round_trips(calls: int, workdir: Path, *, client_validation: bool) -> None:
    """In process: the server's own cost shows, with and without the client's output validation."""
    settings = load_settings(environ={"OPS_AGENT_DB": str(workdir / "bench.db"), "OPS_AGENT_LOG_LEVEL": "WARNING"})
    async with open_services(settings) as services:
        services.registry.register(NOOP)
        # On, so its cost is measured, with ceilings no run reaches (the defaults would refuse this rate).
        services.gate.rate_limiter = RateLimiter(RateLimits(10**9, 10**9, 10**9, 10**9))
        async with Client(build_server(services)) as client:
            if not client_validation:
                # The SDK's client re-validates every structured result against its output schema with
                # jsonschema, which alone costs more than a whole in-process no-op call: off, to see ours.
                async def skip(name, result) -> None:
                    return None

                client.session.validate_tool_result = skip
            label = "with" if client_validation else "WITHOUT"
            await compare(client, calls, f"MCP round trip in process (the whole gate, {label} the client's output validation)")


class _Endpoints(BaseHTTPRequestHandler):
    hang_s = 30.0

    def do_GET(self) -> None:
        if self.path == "/hang":
            time.sleep(self.hang_s)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of 100 connections must not overflow the listen backlog


async def hundred_checks(timeout_s: float, workdir: Path) -> None:
    server = _Server(("127.0.0.1", 0), _Endpoints)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    checks = [ServiceCheck(name=f"svc{i:03d}", url=f"{base}/ok/{i}", timeout_s=timeout_s) for i in range(99)]
    checks.append(ServiceCheck(name="hanging", url=f"{base}/hang", timeout_s=timeout_s))
    settings = load_settings(environ={"OPS_AGENT_DB": str(workdir / "checks.db"), "OPS_AGENT_LOG_LEVEL": "WARNING"})
    settings = settings.model_copy(update={"services": checks})
    try:
        async with open_services(settings) as services:
            totals = []
            for _ in range(3):
                started = time.perf_counter()
                report = await services.registry.invoke(services.identity, "check_service_health", {})
                totals.append(time.perf_counter() - started)
    finally:
        server.shutdown()
        server.server_close()
    best = min(totals)
    print(f"\n100 health checks at once, one hanging, timeout {timeout_s:g} s (3 rounds):")
    print(f"  up {report.healthy}, down {report.unhealthy} "
          f"({next(s.error for s in report.services if s.name == 'hanging')})")
    print(f"  total {', '.join(f'{t:.3f}' for t in totals)} s; best {best / timeout_s:.2f}x the timeout, "
          f"worst {max(totals) / timeout_s:.2f}x   [{'met' if max(totals) <= 1.2 * timeout_s else 'NOT MET'}] goal <= 1.2x")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="monitoring-bench-") as directory:
        workdir = Path(directory)
        print(f"python {sys.version.split()[0]}; monitoring benchmark\n")
        await round_trips_stdio(args.calls, workdir)
        await round_trips(args.calls, workdir, client_validation=True)
        await round_trips(args.calls, workdir, client_validation=False)
        await hundred_checks(args.timeout_s, workdir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--timeout-s", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
