"""What the governance gate costs an MCP tool call: governed ops-agent server vs a bare MCPServer.

Goal (from the issue): p50/p99 round trip of a governed tool call vs a bare `MCPServer` no-op tool, in
the same run, over stdio and over streamable HTTP, and the ratio; then the seed's load test (100
concurrent clients over HTTP): throughput and p99 for both servers.
Goals: governed <= 1.2x bare at p50; under 100 concurrent clients, governed throughput >= 0.8x bare,
with no errors.

Both servers are subprocesses of this script (`--serve bare|governed`):
  bare      MCPServer("bare") with one async no-op tool `noop() -> dict`.
  governed  ops-agent's own server (`build_server` / `build_http_app` over `open_services`, a temp SQLite
            store) with one extra registry tool `noop` (action "read"), so every call passes the whole gate:
            registry validation, budget, permission, audit. `get_system_metrics`, a real governed tool, is
            measured beside it for information.
HTTP is uvicorn on 127.0.0.1, stateless streamable HTTP with the same app settings for both servers.
Sequential latencies are taken in alternating blocks (order flipped every block), and the load test runs
in bursts alternating between the two servers (all sessions to both open throughout), so that noise on
this shared machine hits both servers alike. This (client) process pauses its own garbage collector inside
timed windows; the servers run as they ship. Server CPU per call (from /proc schedstat) is printed too: it
is the figure least disturbed by other load. The script prints figures; it asserts nothing.

    python benchmarks/mcp_overhead.py            # full run (500 calls per series, 100 clients x 20 calls)
    python benchmarks/mcp_overhead.py --quick    # smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCRIPT = Path(__file__).resolve()
HOST = "127.0.0.1"
NOOP = "noop"
METRICS = "get_system_metrics"
STARTUP_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0
MAX_CONSECUTIVE_FAILURES = 5


# ------------------------------------------------------------------------------------------------------
# Server side: `--serve bare|governed --transport stdio|http`
# ------------------------------------------------------------------------------------------------------


def _bare_server():
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bare", log_level="WARNING")

    @server.tool()
    async def noop() -> dict:
        """Do nothing."""
        return {"ok": True}

    return server


def _noop_spec():
    from mcp.types import ToolAnnotations
    from pydantic import BaseModel

    from ops_agent.registry import ToolContext, ToolInput, ToolSpec

    class NoopInput(ToolInput):
        pass

    class NoopOutput(BaseModel):
        ok: bool

    async def handler(arguments: NoopInput, context: ToolContext) -> NoopOutput:
        return NoopOutput(ok=True)

    return ToolSpec(
        name=NOOP,
        description="Do nothing (benchmark).",
        input_model=NoopInput,
        output_model=NoopOutput,
        handler=handler,
        actions=("read",),
        annotations=ToolAnnotations(read_only_hint=True),
        planner_visible=False,
    )


async def _serve_uvicorn(app: Any, port: int) -> None:
    """Serve `app` like mcp_server.serve.serve_http does, on a socket bound here, and say READY <port>."""
    import uvicorn

    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then, as it does when
    # uvicorn binds host/port itself (serve_http); with proto 0 every keep-alive response stalls ~40 ms
    # (Nagle vs delayed ACK on the final chunk).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(2048)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if server.started:
        print(f"READY {sock.getsockname()[1]}", flush=True)
    await task


async def _serve(kind: str, transport: str, port: int, db: str | None) -> None:
    if kind == "bare":
        server = _bare_server()
        if transport == "stdio":
            await server.run_stdio_async()
        else:
            await _serve_uvicorn(server.streamable_http_app(stateless_http=True), port)
        return

    from mcp_server.server import build_http_app, build_server
    from ops_agent.config import load_settings
    from ops_agent.governance.rate_limit import RateLimiter, RateLimits
    from ops_agent.services import configure_logging, open_services

    if not db:
        raise SystemExit("--serve governed needs --db PATH")
    settings = load_settings(environ={"OPS_AGENT_DB": db, "OPS_AGENT_LOG_LEVEL": "WARNING"})
    configure_logging(settings)
    async with open_services(settings) as services:
        services.registry.register(_noop_spec())
        # The rate limiter stays on, so its cost is in the figures, with ceilings no run reaches (the load
        # test is 2000 calls in seconds from one agent, which the defaults would rightly refuse).
        services.gate.rate_limiter = RateLimiter(RateLimits(10**9, 10**9, 10**9, 10**9))
        if transport == "stdio":
            await build_server(services, via="mcp-stdio").run_stdio_async()
        else:
            await _serve_uvicorn(build_http_app(services), port)


# ------------------------------------------------------------------------------------------------------
# Client side: measurements
# ------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass
class Series:
    transport: str
    server: str  # bare | governed
    tool: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    server_cpu_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.server} {self.tool}"

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies) * 1000 if self.latencies else math.nan


@dataclass
class LoadResult:
    """One server's share of the load test, summed over its bursts."""

    server: str
    clients: int
    calls_each: int
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    connect_failures: int = 0
    wall_s: float = 0.0  # sum of this server's burst walls
    latencies: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    bursts: list[float] = field(default_factory=list)  # calls/s of each burst

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def fail(self, exc: BaseException | str) -> None:
        kind = exc if isinstance(exc, str) else type(exc).__name__
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


class ServerProcess:
    """An HTTP server subprocess of this script; always terminated by `stop()`."""

    def __init__(self, kind: str, db: Path | None, workdir: Path) -> None:
        self.kind = kind
        self.db = db
        self.log_path = workdir / f"{kind}-http.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self._log: TextIO | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    async def start(self) -> None:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        args = [str(SCRIPT), "--serve", self.kind, "--transport", "http", "--port", "0"]
        if self.db is not None:
            args += ["--db", str(self.db)]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=self._log, cwd=ROOT, env=_child_env()
        )
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"{self.kind} HTTP server exited during startup:\n{self.log_tail()}")
                    if line.startswith(b"READY "):
                        self.port = int(line.split()[1])
                        break
        except TimeoutError:
            message = f"{self.kind} HTTP server not ready in {STARTUP_TIMEOUT_S:g} s:\n{self.log_tail()}"
            raise RuntimeError(message) from None

    def cpu_s(self) -> float:
        return _cpu_s(self.proc.pid) if self.proc else 0.0

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), 10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("OPS_AGENT_CONFIG", None)
    return env


def _cpu_s(pid: int) -> float:
    """CPU seconds used so far by process `pid`, all threads: ns-precise schedstat on Linux, else psutil."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread ended meanwhile
        return total / 1e9
    except OSError:
        pass
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _stdio_server_pid(kind: str) -> int | None:
    """The pid of the stdio server child that `stdio_client` spawned for `kind`."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if str(SCRIPT) in cmdline and "--serve" in cmdline and kind in cmdline and "stdio" in cmdline:
            return child.pid
    return None


async def _open_stdio_client(stack: AsyncExitStack, kind: str, db: Path | None, errlog: TextIO):
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    args = [str(SCRIPT), "--serve", kind, "--transport", "stdio"]
    if db is not None:
        args += ["--db", str(db)]
    params = StdioServerParameters(command=sys.executable, args=args, env=_child_env(), cwd=str(ROOT))
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        return await stack.enter_async_context(
            Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT_S)
        )


async def _open_http_client(stack: AsyncExitStack, url: str):
    from mcp import Client

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:  # bounded by the deadline
        try:
            async with asyncio.timeout(10):
                client = await stack.enter_async_context(Client(url, read_timeout_seconds=CALL_TIMEOUT_S))
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@contextmanager
def _client_gc_paused():
    """No garbage collection in this (client) process inside a timed window: a full collection here takes
    tens of ms and would land on whichever server happened to be measured. Collected between windows."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _freeze_client_heap() -> None:
    """Move what setup allocated out of the collector's sight, so collections between windows are short."""
    gc.collect()
    gc.freeze()


async def _call(client: Any, tool: str) -> bool:
    result = await client.call_tool(tool, {})
    return not result.is_error


async def sequential(
    transport: str, clients: dict[str, Any], pids: dict[str, int | None], calls: int, warmup: int, blocks: int
) -> list[Series]:
    """Alternating blocks: bare noop, governed noop, governed get_system_metrics; order flips each block."""
    series = [
        Series(transport, "bare", NOOP),
        Series(transport, "governed", NOOP),
        Series(transport, "governed", METRICS),
    ]
    for s in series:  # warm up: imports, caches, tool listing, JIT-less but allocator-warm
        client = clients[s.server]
        for _ in range(warmup):
            await _call(client, s.tool)
    _freeze_client_heap()
    per_block = [calls // blocks + (1 if i < calls % blocks else 0) for i in range(blocks)]
    for i, n in enumerate(per_block):
        order = series if i % 2 == 0 else series[::-1]
        for s in order:
            client, pid = clients[s.server], pids.get(s.server)
            with _client_gc_paused():
                await _timed_block(s, client, pid, n)
    return series


async def _timed_block(s: Series, client: Any, pid: int | None, n: int) -> None:
    cpu0 = _cpu_s(pid) if pid else 0.0
    failing = 0
    for _ in range(n):
        started = time.perf_counter()
        try:
            ok = await _call(client, s.tool)
        except Exception as exc:
            ok, error = False, exc
        else:
            error = None
        s.latencies.append(time.perf_counter() - started)
        s.errors += not ok
        failing = 0 if ok else failing + 1
        if failing >= MAX_CONSECUTIVE_FAILURES:  # the server is gone or broken: stop, don't wait it out
            raise RuntimeError(f"{s.transport} {s.label}: {failing} calls in a row failed (last: {error!r})")
    s.server_cpu_s += (_cpu_s(pid) - cpu0) if pid else 0.0


async def run_stdio(args: argparse.Namespace, workdir: Path) -> list[Series]:
    errlog_path = workdir / "stdio-servers.log"
    with open(errlog_path, "w") as errlog:
        try:
            async with AsyncExitStack() as stack:
                bare = await _open_stdio_client(stack, "bare", None, errlog)
                governed = await _open_stdio_client(stack, "governed", workdir / "stdio.db", errlog)
                pids = {"bare": _stdio_server_pid("bare"), "governed": _stdio_server_pid("governed")}
                clients = {"bare": bare, "governed": governed}
                return await sequential("stdio", clients, pids, args.calls, args.warmup, args.blocks)
        except BaseException:
            errlog.flush()
            log_text = errlog_path.read_text(errors="replace")[-3000:]
            print(f"stdio server log ({errlog_path}):\n{log_text}", file=sys.stderr)
            raise


class _Burst:
    """Start signal and completion count of one burst of one server."""

    def __init__(self, workers: int) -> None:
        self.go = asyncio.Event()
        self.done = asyncio.Event()
        self.waiting = workers
        if workers == 0:
            self.done.set()

    def finish(self) -> None:
        self.waiting -= 1
        if self.waiting <= 0:
            self.done.set()


async def load_test(
    servers: dict[str, ServerProcess], clients: int, calls_each: int, bursts: int
) -> dict[str, LoadResult]:
    """`clients` concurrent sessions per server, all open at once; each session makes `calls_each` calls.

    The calls are run in `bursts` bursts per server, alternating between the servers (order flipped every
    burst), each burst starting all sessions of one server together: machine noise lands on both alike.
    """
    from mcp import Client

    bursts = max(1, min(bursts, calls_each))
    per_burst = [calls_each // bursts + (1 if i < calls_each % bursts else 0) for i in range(bursts)]
    results = {kind: LoadResult(kind, clients, calls_each) for kind in servers}
    plan = {kind: [_Burst(clients) for _ in range(bursts)] for kind in servers}
    ready = _Burst(clients * len(servers))
    all_done = asyncio.Event()  # sessions close only after the last burst, so closing never overlaps a burst

    async def worker(kind: str) -> None:
        result, url = results[kind], servers[kind].url
        next_burst, connected = 0, False
        try:
            async with Client(url, read_timeout_seconds=CALL_TIMEOUT_S) as client:
                await _call(client, NOOP)  # warm-up: session, tool listing
                connected = True
                ready.finish()
                for burst, n in zip(plan[kind], per_burst):
                    await burst.go.wait()
                    for _ in range(n):
                        started = time.perf_counter()
                        try:
                            ok = await _call(client, NOOP)
                        except Exception as exc:  # counted, not raised: the load test reports errors
                            ok = False
                            result.fail(exc)
                        else:
                            if not ok:
                                result.fail("is_error result")
                        result.latencies.append(time.perf_counter() - started)
                        result.ok += ok
                        result.errors += not ok
                    next_burst += 1
                    burst.finish()
                await all_done.wait()
        except Exception as exc:
            result.fail(exc)
            if not connected:
                result.connect_failures += 1
                ready.finish()
            result.errors += sum(per_burst[next_burst:])
            for burst in plan[kind][next_burst:]:
                burst.finish()

    tasks = [asyncio.create_task(worker(kind)) for kind in servers for _ in range(clients)]
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S + clients * calls_each * len(servers) * 0.1):
            await ready.done.wait()
            _freeze_client_heap()
            kinds = list(servers)
            for i in range(bursts):
                for kind in kinds if i % 2 == 0 else kinds[::-1]:
                    burst, result, server = plan[kind][i], results[kind], servers[kind]
                    ok_before = result.ok
                    with _client_gc_paused():
                        cpu0, client_cpu0, started = server.cpu_s(), time.process_time(), time.perf_counter()
                        burst.go.set()
                        await burst.done.wait()
                        wall = time.perf_counter() - started
                    result.wall_s += wall
                    result.server_cpu_s += server.cpu_s() - cpu0
                    result.client_cpu_s += time.process_time() - client_cpu0
                    result.bursts.append((result.ok - ok_before) / wall if wall > 0 else 0.0)
            all_done.set()
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


async def run_http(args: argparse.Namespace, workdir: Path) -> tuple[list[Series], dict[str, LoadResult]]:
    servers = {
        "bare": ServerProcess("bare", None, workdir),
        "governed": ServerProcess("governed", workdir / "http.db", workdir),
    }
    try:
        await asyncio.gather(*(s.start() for s in servers.values()))
        async with AsyncExitStack() as stack:
            clients = {kind: await _open_http_client(stack, s.url) for kind, s in servers.items()}
            pids = {kind: s.proc.pid for kind, s in servers.items()}
            series = await sequential("http", clients, pids, args.calls, args.warmup, args.blocks)
        loads: dict[str, LoadResult] = {}
        if args.clients > 0 and args.calls_per_client > 0:
            loads = await load_test(servers, args.clients, args.calls_per_client, args.bursts)
        return series, loads
    except BaseException:
        for s in servers.values():
            if tail := s.log_tail():
                print(f"--- {s.kind} HTTP server log tail ---\n{tail}", file=sys.stderr)
        raise
    finally:
        await asyncio.gather(*(s.stop() for s in servers.values()), return_exceptions=True)


# ------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def report(args: argparse.Namespace, series: list[Series], loads: dict[str, LoadResult], elapsed_s: float) -> None:
    from importlib.metadata import version

    print()
    print("MCP overhead: governed ops-agent tool call vs bare MCPServer no-op")
    print(
        f"python {platform.python_version()}, mcp {version('mcp')}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, run took {elapsed_s:.1f} s"
        + (" [--quick]" if args.quick else "")
    )
    print(
        f"sequential: {args.calls} calls per series after {args.warmup} warm-up calls, "
        f"{args.blocks} alternating blocks, one client per server"
    )
    print()
    header = (
        f"{'transport':<9} {'server / tool':<28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'x bare p50':>10} "
        f"{'x bare p99':>10} {'srv CPU us/call':>15} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    goals: list[tuple[str, bool]] = []
    notes: list[str] = []
    for transport in ("stdio", "http"):
        rows = [s for s in series if s.transport == transport]
        if not rows:
            continue
        bare = next(s for s in rows if s.server == "bare")
        for s in rows:
            cpu = s.server_cpu_s / len(s.latencies) * 1e6 if s.latencies and s.server_cpu_s else math.nan
            r50 = "" if s is bare else f"{_ratio(s.p(50), bare.p(50)):.2f}x"
            r99 = "" if s is bare else f"{_ratio(s.p(99), bare.p(99)):.2f}x"
            print(
                f"{transport:<9} {s.label:<28} {s.p(50):>8.3f} {s.p(99):>8.3f} {s.mean_ms:>8.3f} {r50:>10} {r99:>10} "
                f"{cpu:>15.0f} {s.errors:>6}"
            )
        governed = next(s for s in rows if s.server == "governed" and s.tool == NOOP)
        ratio = _ratio(governed.p(50), bare.p(50))
        goals.append(
            (f"{transport}: governed noop p50 <= 1.2x bare p50 (is {ratio:.2f}x)", ratio <= 1.2 and not governed.errors)
        )
        if governed.server_cpu_s and bare.server_cpu_s:
            notes.append(
                f"{transport}: server CPU per noop call governed/bare "
                f"{_ratio(governed.server_cpu_s, bare.server_cpu_s):.2f}x (same call counts)"
            )
    if loads:
        bursts = max(1, min(args.bursts, args.calls_per_client))
        print()
        print(
            f"load test over HTTP: {args.clients} concurrent clients per server (own session each) x "
            f"{args.calls_per_client} calls of noop, in {bursts} bursts per server alternating between the servers"
        )
        header = (
            f"{'server':<9} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'busy s':>7} {'ok':>6} "
            f"{'errors':>6} {'srv CPU us/call':>15} {'client CPU %':>12}"
        )
        print(header)
        print("-" * len(header))
        for run in loads.values():
            cpu = run.server_cpu_s / run.ok * 1e6 if run.ok else math.nan
            client_cpu = 100 * run.client_cpu_s / run.wall_s if run.wall_s else math.nan
            print(
                f"{run.server:<9} {run.throughput:>9.1f} {run.p(50):>8.2f} {run.p(99):>8.2f} {run.p(100):>8.2f} "
                f"{run.wall_s:>7.2f} {run.ok:>6} {run.errors:>6} {cpu:>15.0f} {client_cpu:>12.0f}"
                + (f"  {run.error_kinds}" if run.error_kinds else "")
                + (f"  ({run.connect_failures} sessions failed to connect)" if run.connect_failures else "")
            )
        bare, gov = loads["bare"], loads["governed"]
        ratio = _ratio(gov.throughput, bare.throughput)
        paired = sorted(_ratio(g, b) for g, b in zip(gov.bursts, bare.bursts))
        cpu_ratio = _ratio(gov.server_cpu_s / max(gov.ok, 1), bare.server_cpu_s / max(bare.ok, 1))
        print()
        print(
            f"governed/bare: throughput {ratio:.2f}x (burst by burst: median {statistics.median(paired):.2f}x, "
            f"range {paired[0]:.2f}x-{paired[-1]:.2f}x), p99 {_ratio(gov.p(99), bare.p(99)):.2f}x, "
            f"server CPU per call {cpu_ratio:.2f}x"
        )
        client_busy = max(r.client_cpu_s / r.wall_s for r in loads.values() if r.wall_s)
        if client_busy > 0.9:
            notes.append(
                f"load: the client process ran at {100 * client_busy:.0f}% CPU, so the load test is client-bound; "
                f"were the server the bottleneck, governed throughput would be ~{_ratio(1, cpu_ratio):.2f}x bare "
                "(1 / server CPU per call ratio)"
            )
        goals.append(
            (f"load ({args.clients} clients): governed throughput >= 0.8x bare (is {ratio:.2f}x)", ratio >= 0.8)
        )
        goals.append(
            (
                f"load ({args.clients} clients): no errors (governed {gov.errors}, bare {bare.errors})",
                not (gov.errors or bare.errors),
            )
        )
    metrics = [s for s in series if s.tool == METRICS]
    print()
    print("goals:" + (" (smoke run: indicative only)" if args.quick else ""))
    for text, met in goals:
        print(f"  [{'met' if met else 'NOT MET'}] {text}")
    for s in metrics:
        print(f"  [info] {s.transport}: get_system_metrics p99 {s.p(99):.1f} ms (seed: < 100 ms for monitoring)")
    for note in notes:
        print(f"  [info] {note}")


# ------------------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mcp-overhead-"))
    series: list[Series] = []
    loads: dict[str, LoadResult] = {}
    try:
        if "stdio" in args.transports:
            print("stdio: measuring ...", file=sys.stderr, flush=True)
            series += await run_stdio(args, workdir)
        if "http" in args.transports:
            print("http: measuring (sequential, then load) ...", file=sys.stderr, flush=True)
            http_series, loads = await run_http(args, workdir)
            series += http_series
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, series, loads, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", choices=("bare", "governed"), help="(internal) run one server")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="(with --serve)")
    parser.add_argument("--port", type=int, default=0, help="(with --serve --transport http) 0 picks a free port")
    parser.add_argument("--db", help="(with --serve governed) SQLite file")
    parser.add_argument("--calls", type=int, default=500, help="timed sequential calls per series (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up calls per series (default 50)")
    parser.add_argument(
        "--blocks", type=int, default=50, help="alternating blocks per series (default 50: 10 calls each at 500)"
    )
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients in the load test (default 100)")
    parser.add_argument("--calls-per-client", type=int, default=20, help="calls per load-test client (default 20)")
    parser.add_argument(
        "--bursts", type=int, default=10, help="load-test bursts per server, alternating between servers (default 10)"
    )
    parser.add_argument("--transports", default="stdio,http", help="comma-separated: stdio,http")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 calls, 10 clients x 10 calls")
    args = parser.parse_args(argv)

    if args.serve:
        asyncio.run(_serve(args.serve, args.transport, args.port, args.db))
        return
    if args.quick:
        args.calls, args.warmup, args.blocks = 50, 10, 10
        args.clients, args.calls_per_client, args.bursts = 10, 10, 5
    args.transports = {t.strip() for t in args.transports.split(",") if t.strip()}
    args.blocks = max(1, min(args.blocks, args.calls))
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
