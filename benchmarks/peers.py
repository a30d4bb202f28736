"""What the governance gate costs a peer call: `registry.invoke` of a peer tool vs the `mcp` Client directly.

Goal (issue 10): peer call through the gate <= 1.2x a direct call with the `mcp` client, same run.

The peer is tests/peer_server.py (the Dev Agent stand-in), started twice per transport: one process for
ops-agent (`open_services` with `peers:` in its config, a temp SQLite store) and one for a bare `mcp`
Client, over stdio and over streamable HTTP (127.0.0.1, stateless, JSON responses, bearer token). Each
round calls `echo` once per series, in an order that flips every round, so noise on this shared machine
hits all series alike. Series:
  direct      a plain `mcp.Client` session of its own to its own peer process
  session     the same session ops-agent holds (`client.call_tool`, no gate): the gate's cost alone
  gated       `registry.invoke(caller, "dev_agent__echo", ...)`: validation, rate limit, budget, permission,
              the call, reputation and a durable audit record (action peer:call, kind outward)
  gated-read  the same peer declared `action: read` (a peer trusted for reads): reads are audited in batches
The client process pauses its garbage collector inside timed calls. It prints figures; it asserts nothing.

    python benchmarks/peers.py            # 400 rounds per transport
    python benchmarks/peers.py --quick    # 60 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml
from mcp import Client, StdioServerParameters

from ops_agent.config import load_settings
from ops_agent.governance import Caller
from ops_agent.services import open_services
from tests.processes import free_port, stop, wait_until_ready

PEER = [sys.executable, "-m", "tests.peer_server"]


def _start_http_peer(workdir: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = workdir / f"peer-{port}.log"
    with open(log, "wb") as err:
        process = subprocess.Popen([*PEER, "--http", str(port)], cwd=ROOT, env={**os.environ, "PEER_TOKEN": token},
                                   stdout=subprocess.DEVNULL, stderr=err)
    wait_until_ready(process, f"http://127.0.0.1:{port}/healthz", log, 30.0)
    return process, f"http://127.0.0.1:{port}/mcp"


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    gc.disable()
    try:
        start = time.perf_counter()
        await call()
        return (time.perf_counter() - start) * 1000
    finally:
        gc.enable()


async def run(transport: str, rounds: int, workdir: Path) -> dict[str, list[float]]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    processes: list[subprocess.Popen] = []
    token = f"bench-{secrets.token_hex(12)}"
    try:
        if transport == "stdio":
            peer_config: dict[str, Any] = {"command": PEER, "cwd": str(ROOT)}
            direct_target: Any = StdioServerParameters(command=PEER[0], args=PEER[1:], cwd=str(ROOT))
            http = None
        else:
            process, url = _start_http_peer(workdir, token)
            processes.append(process)
            peer_config = {"url": url, "token": token}
            process, direct_url = _start_http_peer(workdir, token)
            processes.append(process)
            http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(None))
            direct_target = streamable_http_client(direct_url, http_client=http)
        config = workdir / f"{transport}.yaml"
        config.write_text(yaml.safe_dump({
            "log_level": "WARNING",
            "governance": {"probation_tasks": 0, "rate_limit": {"calls_per_minute": 0, "changes_per_minute": 0}},
            "peers": {"dev_agent": peer_config, "faq": {**peer_config, "action": "read", "tools": ["echo"]}},
        }), encoding="utf-8")
        settings = load_settings(config, environ={"OPS_AGENT_DB": str(workdir / f"{transport}.db")})
        caller = Caller("ops_agent", via="bench")
        async with open_services(settings, enable_monitoring=False, background=False) as services, \
                Client(direct_target, cache=None) as direct:
            session = services.peers.connections["dev_agent"]._client
            arguments = {"text": "x"}
            calls = {
                "direct": lambda: direct.call_tool("echo", arguments),
                "session": lambda: session.call_tool("echo", arguments),
                "gated": lambda: services.registry.invoke(caller, "dev_agent__echo", arguments),
                "gated-read": lambda: services.registry.invoke(caller, "faq__echo", arguments),
            }
            for call in calls.values():  # warm up
                for _ in range(10):
                    await call()
            times: dict[str, list[float]] = {name: [] for name in calls}
            order = list(calls)
            for _ in range(rounds):
                for name in order:
                    times[name].append(await _timed(calls[name]))
                order.reverse()
        if http is not None:
            await http.aclose()
        return times
    finally:
        for process in processes:
            stop(process)


def report(transport: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(times["direct"])
    print(f"\n{transport}: {len(times['direct'])} calls per series (echo), median and p90 in ms")
    for name, values in times.items():
        values = sorted(values)
        median = statistics.median(values)
        p90 = values[int(len(values) * 0.9) - 1]
        print(f"  {name:<11} median {median:7.3f}  p90 {p90:7.3f}  ratio vs direct {median / base:5.2f}x")
    ratio = statistics.median(times["gated"]) / base
    print(f"  gated / direct = {ratio:.2f}x (goal <= 1.2x): {'met' if ratio <= 1.2 else 'NOT met'}")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 rounds per transport")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--transport", choices=["stdio", "http", "both"], default="both")
    args = parser.parse_args(argv)
    rounds = 60 if args.quick else args.rounds
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in (["stdio", "http"] if args.transport == "both" else [args.transport]):
            report(transport, await run(transport, rounds, Path(tmp)))


if __name__ == "__main__":
    asyncio.run(main())
