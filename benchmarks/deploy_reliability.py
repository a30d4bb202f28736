"""Deploy reliability against the Vercel emulator with transient faults.

N deploys (default 200) go through the whole governed path (registry -> gate -> DeploymentTool -> client)
to the emulator over a real socket, with a share of all requests (default 20%) answered 429/500/502/503
and a share of creates answered 500 after the deployment was made (a lost answer). Each deploy is
`deploy(wait=false)` then `wait_for_deployment`, one after another, so every emulator request is
attributed to the deploy that made it. Printed:

- success rate: deploys that ended READY (seed target > 95%; goal >= 99.5%);
- duplicates: deployments in the emulator beyond one per idempotency key (goal 0);
- client overhead: for the `deploy` call, the client's wall time vs the emulator's own service time for
  the requests of that call (an ASGI timer around the emulator), medians side by side in this run.

    python benchmarks/deploy_reliability.py [--deploys 200] [--error-rate 0.2] [--lost-rate 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops_agent.config import load_settings  # noqa: E402
from ops_agent.errors import OpsAgentError  # noqa: E402
from ops_agent.services import open_services  # noqa: E402
from sandbox.vercel import EmulatorConfig, VercelEmulator  # noqa: E402

PROJECT = "demo-app"


class ServiceTimer:
    """ASGI middleware: the emulator's own time per request, collected into the current bucket."""

    def __init__(self, app) -> None:
        self.app = app
        self.bucket: list[float] = []

    async def __call__(self, scope, receive, send) -> None:
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.bucket.append(time.perf_counter() - started)


async def run(args: argparse.Namespace) -> None:
    config = EmulatorConfig(
        build_time_s=args.build_time_s,
        transient_error_rate=args.error_rate,
        lost_response_rate=args.lost_rate,
        retry_after_s=0,
        rate_limit=10**9,
        seed=args.seed,
    )
    emulator = VercelEmulator(config)
    timer = ServiceTimer(emulator.app)
    emulator.app = timer  # served as the emulator's app, so every request is timed
    workdir = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    async with emulator:
        cfg = workdir / "config.yaml"
        cfg.write_text(
            f"log_level: WARNING\nstorage:\n  path: {workdir / 'ops.db'}\n"
            # Off: 200 deploys back to back from one agent are the measurement, not a runaway.
            "governance:\n  rate_limit: {calls_per_minute: 0, changes_per_minute: 0}\n"
            f"vercel:\n  api_url: {emulator.base_url}\n  team_id: {emulator.team_id}\n"
            f"  sandbox_projects: [{PROJECT}]\n  poll_interval_s: 0.02\n"
        )
        settings = load_settings(cfg, environ={"VERCEL_TOKEN": emulator.token})
        outcomes: Counter[str] = Counter()
        client_s: list[float] = []
        service_s: list[float] = []
        requests_per_deploy: list[int] = []
        keys: set[str] = set()
        started = time.perf_counter()
        async with open_services(settings) as services:
            caller = services.identity
            for number in range(args.deploys):
                key = f"bench-{args.seed}-{number:05d}"
                keys.add(key)
                timer.bucket = []
                t0 = time.perf_counter()
                try:
                    created = await services.registry.invoke(
                        caller, "deploy", {"project": PROJECT, "environment": "production", "wait": False, "idempotency_key": key}
                    )
                except OpsAgentError as exc:
                    outcomes[f"deploy failed: {exc.public_message[:60]}"] += 1
                    continue
                client_s.append(time.perf_counter() - t0)
                service_s.append(sum(timer.bucket))
                requests_per_deploy.append(len(timer.bucket))
                try:
                    final = await services.registry.invoke(caller, "wait_for_deployment", {"deployment_id": created.id, "timeout_s": 60})
                    outcomes[final.state] += 1
                except OpsAgentError as exc:
                    outcomes[f"wait failed: {exc.public_message[:60]}"] += 1
        elapsed = time.perf_counter() - started
        snapshot = emulator.state.snapshot()

    made = [d for d in snapshot["deployments"] if d["meta"].get("opsAgentIdempotencyKey") in keys]
    per_key = Counter(d["meta"]["opsAgentIdempotencyKey"] for d in made)
    duplicates = sum(count - 1 for count in per_key.values())
    ready = outcomes["READY"]
    overhead = [c - s for c, s in zip(client_s, service_s)]
    median_client, median_service = statistics.median(client_s), statistics.median(service_s)

    print("Deploy reliability: governed deploys against the Vercel emulator")
    print(f"python {sys.version.split()[0]}, {args.deploys} deploys, {args.error_rate:.0%} of requests answered "
          f"429/5xx, {args.lost_rate:.0%} of creates lose their answer, build {args.build_time_s} s, seed {args.seed}, "
          f"run took {elapsed:.1f} s")
    print(f"faults the emulator injected: {snapshot['counters']['faults']}")
    print()
    print(f"outcomes: {dict(outcomes)}")
    print(f"success rate (READY): {ready}/{args.deploys} = {ready / args.deploys:.2%}")
    print(f"deployments created: {len(made)} for {len(keys)} idempotency keys; duplicates: {duplicates}")
    print()
    print(f"deploy call, per deploy (median over {len(client_s)}):")
    print(f"  client wall time     {median_client * 1000:8.2f} ms (p95 {percentile(client_s, 95) * 1000:.2f} ms)")
    print(f"  emulator service     {median_service * 1000:8.2f} ms over a median of {statistics.median(requests_per_deploy):.0f} requests")
    print(f"  client overhead      {statistics.median(overhead) * 1000:8.2f} ms "
          f"= {median_client / median_service if median_service else float('nan'):.1f}x the service time "
          "(includes retry backoff after injected faults)")
    clean = [o for o, n in zip(overhead, requests_per_deploy) if n == min(requests_per_deploy)]
    if clean:
        print(f"  overhead, deploys without retries: median {statistics.median(clean) * 1000:.2f} ms over {len(clean)} deploys")
    print()
    print("goals:")
    print(f"  [{'met' if ready / args.deploys >= 0.995 else 'NOT MET'}] success rate >= 99.5% (seed: > 95%)")
    print(f"  [{'met' if duplicates == 0 else 'NOT MET'}] duplicate deployments = 0")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=200)
    parser.add_argument("--error-rate", type=float, default=0.2)
    parser.add_argument("--lost-rate", type=float, default=0.05)
    parser.add_argument("--build-time-s", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=2026)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
