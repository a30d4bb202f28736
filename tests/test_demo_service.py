"""The demo service over real sockets: it serves what production points to on the Vercel emulator, each fault
shows in /work, /health, the JSON log and /metrics, and the remediations (rollback, restart, free disk,
through ctl.py as a subprocess) fix what they should. Memory and disk run on a manual clock: no sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.demo_service import DemoService, Fault, LoadGenerator
from sandbox.vercel import EmulatorConfig, VercelEmulator, listen

REPO = Path(__file__).resolve().parents[1]
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACCESS_KEYS = {
    "time", "level", "service", "message", "method", "path", "status", "duration_ms", "deployment", "version",
}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Box:
    emu: VercelEmulator
    api: httpx2.AsyncClient  # the Vercel API, authenticated
    demo: DemoService
    http: httpx2.AsyncClient  # the demo service

    async def deploy(self, ref: str) -> str:
        """A production deployment of `ref`, returned once production serves it."""
        body = {
            "name": "demo-app", "project": "demo-app", "target": "production",
            "gitSource": {"type": "github", "ref": ref, "org": "acme", "repo": "demo-app"},
        }
        response = await self.api.post("/v13/deployments", json=body)
        assert response.status_code == 200, response.text
        deployment_id = response.json()["id"]
        await until(lambda: self.emu.state.production_deployment_id("demo-app") == deployment_id)
        return deployment_id

    async def rollback(self, deployment_id: str) -> None:
        project_id = next(iter(self.emu.state.projects))
        response = await self.api.post(f"/v1/projects/{project_id}/rollback/{deployment_id}")
        assert response.status_code == 201, response.text

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.demo.log_path.read_text().splitlines()]

    def errors(self) -> list[str]:
        return [line["message"] for line in self.logs() if line["level"] == "error" and "status" not in line]

    async def metrics(self) -> dict[str, float]:
        """Samples by name with labels, e.g. `demo_requests_total{path=/work,status=500}`."""
        text = (await self.http.get("/metrics")).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return samples


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Box]]]:
    """`await sandbox(versions=..., clock=...)`: a Vercel emulator (50 ms builds) and a demo service on it."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**options: Any) -> Box:
            emu = await stack.enter_async_context(VercelEmulator(EmulatorConfig(build_time_s=0.05, seed=3)))
            api = await stack.enter_async_context(httpx2.AsyncClient(
                base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.token}"},
                params={"teamId": emu.team_id}, timeout=10,
            ))
            demo = await stack.enter_async_context(DemoService(emu.state, log_path=tmp_path / "demo.log", **options))
            http = await stack.enter_async_context(httpx2.AsyncClient(base_url=demo.base_url, timeout=10))
            return Box(emu, api, demo, http)

        yield start


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.demo_service.ctl", *args], cwd=REPO, capture_output=True, text=True,
        timeout=30, check=False,
    )


async def test_serves_the_production_version_and_follows_deploys_and_rollbacks(sandbox):
    box = await sandbox(versions={"v2-errors": Fault(kind="error_spike", error_rate=1.0)})
    for path in ("/work", "/health"):
        nothing = await box.http.get(path)
        assert nothing.status_code == 503 and nothing.headers["x-vercel-error"] == "DEPLOYMENT_NOT_FOUND"

    v1 = await box.deploy("v1")
    health = await box.http.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "version": "v1", "deployment": v1}
    assert (await box.http.get("/work")).status_code == 200

    v2 = await box.deploy("v2-errors")
    assert (await box.http.get("/work")).status_code == 500
    assert (await box.http.get("/health")).json()["version"] == "v2-errors"  # a partial failure: health is fine
    assert box.demo.snapshot()["faults"]["error_spike"]["error_rate"] == 1.0

    await box.rollback(v1)
    assert (await box.http.get("/work")).status_code == 200
    assert box.demo.snapshot()["deployment"] == v1 and box.demo.snapshot()["faults"] == {}
    messages = [line["message"] for line in box.logs()]
    assert f"starting demo (version v2-errors, deployment {v2})" in messages
    assert messages.count(f"starting demo (version v1, deployment {v1})") == 2  # first deploy, then the rollback


async def test_log_lines_are_json_with_the_fields_the_agent_reads(sandbox):
    box = await sandbox(versions={"v2-errors": Fault(kind="error_spike", error_rate=1.0)})
    v1 = await box.deploy("v1")
    await box.http.get("/work")
    await box.http.get("/health")
    v2 = await box.deploy("v2-errors")
    await box.http.get("/work")

    lines = box.logs()
    assert all(TIME.match(line["time"]) and line["service"] == "demo" for line in lines)
    access = [line for line in lines if "status" in line]
    assert [(a["path"], a["status"], a["level"]) for a in access] == [
        ("/work", 200, "info"), ("/health", 200, "info"), ("/work", 500, "error"),
    ]
    for line in access:
        assert set(line) == ACCESS_KEYS and line["method"] == "GET" and line["duration_ms"] >= 0
        assert line["message"] == f"GET {line['path']} {line['status']}"
    assert (access[0]["deployment"], access[0]["version"]) == (v1, "v1")
    error = next(line for line in lines if line["level"] == "error" and "status" not in line)
    assert error["message"] == (
        "TypeError: Cannot read properties of undefined (reading 'id') at handler (/var/task/api/work.js:42:17)"
    )
    assert (error["deployment"], error["version"]) == (v2, "v2-errors")
    assert lines.index(error) == lines.index(access[2]) - 1  # the error, then the request's access line


async def test_an_error_spike_fails_part_of_the_requests(sandbox):
    box = await sandbox(versions={"v2": Fault(kind="error_spike", error_rate=0.5)})
    await box.deploy("v2")
    statuses = [(await box.http.get("/work")).status_code for _ in range(40)]
    assert 0 < statuses.count(500) < 40 and statuses.count(500) + statuses.count(200) == 40
    assert (await box.http.get("/health")).status_code == 200
    metrics = await box.metrics()
    assert metrics["demo_requests_total{path=/work,status=500}"] == statuses.count(500)
    assert metrics["demo_requests_total{path=/work,status=200}"] == statuses.count(200)
    assert metrics["demo_up"] == 1
    assert len(box.errors()) == statuses.count(500)


async def test_latency_slows_work_but_answers(sandbox):
    box = await sandbox()
    await box.deploy("v1")
    box.demo.inject(Fault(kind="latency", latency_ms=150))
    assert (await box.http.get("/work")).status_code == 200
    assert (await box.http.get("/health")).status_code == 200
    work = [line for line in box.logs() if line.get("path") == "/work"]
    assert work[-1]["duration_ms"] >= 134  # 150 ms - 10%: the request slept at least that long
    box.demo.clear("latency")
    assert box.demo.snapshot()["faults"] == {}


async def test_a_crash_loop_version_fails_everything_until_rolled_back(sandbox):
    box = await sandbox(versions={"v3-crash": Fault(kind="crash_loop")})
    v1 = await box.deploy("v1")
    await box.deploy("v3-crash")
    for path in ("/work", "/health"):
        response = await box.http.get(path)
        assert response.status_code == 500 and response.headers["x-vercel-error"] == "FUNCTION_INVOCATION_FAILED"
    assert "Error: Runtime exited with error: exit status 1" in box.errors()
    assert (
        "Unhandled exception during startup: Error: Cannot find module './config/production.json'" in box.errors()
    )
    assert (await box.metrics())["demo_up"] == 0

    box.demo.restart()  # the same code is still deployed: it crashes again
    assert (await box.http.get("/work")).status_code == 500
    await box.rollback(v1)
    assert (await box.http.get("/work")).status_code == 200
    assert (await box.metrics())["demo_up"] == 1


async def test_a_run_time_crash_loop_is_fixed_by_a_restart(sandbox):
    box = await sandbox()
    await box.deploy("v1")
    box.demo.inject(Fault(kind="crash_loop"))
    assert (await box.http.get("/health")).status_code == 500
    box.demo.restart()
    assert (await box.http.get("/health")).status_code == 200


async def test_a_dependency_down_fails_work_and_degrades_health_and_survives_a_restart(sandbox):
    box = await sandbox()
    await box.deploy("v1")
    box.demo.inject(Fault(kind="dependency_down"))
    assert (await box.http.get("/work")).status_code == 500
    health = await box.http.get("/health")
    assert health.status_code == 503
    assert health.json() == {"status": "degraded", "dependency": "db", "error": "connection refused"}
    assert box.errors() == ["Error: connect ECONNREFUSED 10.0.0.5:5432 (database db)"]

    box.demo.restart()  # the database is outside the process
    assert (await box.http.get("/work")).status_code == 500
    box.demo.clear("dependency_down")
    assert (await box.http.get("/work")).status_code == 200


async def test_a_memory_leak_ends_in_an_oom_crash_that_a_restart_recovers(sandbox):
    clock = ManualClock()
    box = await sandbox(clock=clock)
    await box.deploy("v1")
    box.demo.inject(Fault(kind="memory_leak", leak_mb_per_s=100))
    clock.advance(5)
    assert (await box.metrics())["process_resident_memory_bytes"] == 620 * 1024 * 1024
    assert (await box.http.get("/work")).status_code == 200
    clock.advance(5)  # 1120 MB > 1024 MB
    response = await box.http.get("/work")
    assert response.status_code == 500 and response.headers["x-vercel-error"] == "FUNCTION_INVOCATION_FAILED"
    assert (await box.http.get("/health")).status_code == 500
    assert any("JavaScript heap out of memory" in message for message in box.errors())
    assert box.errors()[0].startswith("FATAL ERROR: Reached heap limit Allocation failed")
    assert (await box.metrics())["demo_up"] == 0

    restarted = ctl("restart", "--url", box.demo.admin_url)
    assert restarted.returncode == 0, restarted.stderr
    deployment = box.demo.snapshot()["deployment"]
    assert restarted.stdout == f"restarted demo: version v1 ({deployment}), memory 120 MB\n"
    clock.advance(5)
    assert box.demo.snapshot()["memory_mb"] == 120 and box.demo.snapshot()["faults"] == {}
    assert (await box.http.get("/work")).status_code == 200
    assert "received SIGTERM, shutting down" in [line["message"] for line in box.logs()]


async def test_a_leaking_version_leaks_again_after_a_restart(sandbox):
    clock = ManualClock()
    box = await sandbox(clock=clock, versions={"v2-leak": Fault(kind="memory_leak", leak_mb_per_s=5000)})
    await box.deploy("v2-leak")
    clock.advance(1)
    assert (await box.http.get("/work")).status_code == 500
    box.demo.restart()
    assert box.demo.snapshot()["memory_mb"] == 120
    assert (await box.http.get("/work")).status_code == 200
    clock.advance(1)
    assert (await box.http.get("/work")).status_code == 500


async def test_a_filling_disk_fails_writes_until_free_disk(sandbox):
    clock = ManualClock()
    box = await sandbox(clock=clock)
    await box.deploy("v1")
    box.demo.inject(Fault(kind="disk_fill", fill_mb_per_s=1024))
    clock.advance(3)
    metrics = await box.metrics()
    assert metrics["demo_disk_used_ratio"] == pytest.approx(0.6)
    assert metrics["demo_disk_total_bytes"] == 10 * 1024**3
    assert metrics["demo_disk_used_bytes"] == pytest.approx(0.6 * 10 * 1024**3)
    assert (await box.http.get("/work")).status_code == 200
    clock.advance(10)
    assert (await box.http.get("/work")).status_code == 500
    health = await box.http.get("/health")
    assert health.status_code == 503 and health.json()["error"] == "disk full"
    assert re.fullmatch(r"OSError: \[Errno 28\] No space left on device: '/var/tmp/demo/upload-\w+'", box.errors()[0])
    assert (await box.metrics())["demo_disk_used_ratio"] == 1.0

    box.demo.restart()  # a restart does not delete files
    assert (await box.http.get("/work")).status_code == 500
    freed = ctl("free-disk", "--url", box.demo.admin_url)
    assert freed.returncode == 0, freed.stderr
    assert freed.stdout == "freed 7168 MB on demo: disk 30% used of 10 GB\n"
    clock.advance(10)
    assert box.demo.snapshot()["disk_used_ratio"] == 0.3 and box.demo.snapshot()["faults"] == {}
    assert (await box.http.get("/work")).status_code == 200


async def test_admin_endpoints_inject_clear_and_show_state(sandbox):
    box = await sandbox()
    await box.deploy("v1")
    injected = await box.http.post("/_admin/faults", json={"kind": "error_spike", "error_rate": 1.0})
    assert injected.status_code == 200 and injected.json()["runtime_faults"] == ["error_spike"]
    assert (await box.http.get("/work")).status_code == 500
    bad = await box.http.post("/_admin/faults", json={"kind": "meteor_strike"})
    assert bad.status_code == 422 and "kind" in bad.json()["error"]
    cleared = await box.http.delete("/_admin/faults", params={"kind": "error_spike"})
    assert cleared.json()["faults"] == {}
    assert (await box.http.get("/work")).status_code == 200
    state = (await box.http.get("/_admin/state")).json()
    assert state["version"] == "v1" and state["requests"] == {"/work 200": 1, "/work 500": 1}
    assert not any(line.get("path", "").startswith(("/_admin", "/metrics")) for line in box.logs())


def test_ctl_reports_a_service_it_cannot_reach():
    sock = listen()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = ctl("restart", "--url", f"http://127.0.0.1:{port}", "--timeout-s", "2")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"restart failed: cannot reach the demo service at http://127.0.0.1:{port}")


async def test_the_load_generator_counts_answers_and_failures(sandbox):
    box = await sandbox(versions={"v2-errors": Fault(kind="error_spike", error_rate=1.0)})
    await box.deploy("v1")
    async with LoadGenerator(box.demo.base_url, rps=100) as load:
        await until(lambda: load.stats().ok >= 10)
        await box.deploy("v2-errors")
        await until(lambda: load.stats().server_errors >= 10)
        stats = load.stats()
        assert stats.requests == stats.ok + stats.server_errors and stats.connection_errors == 0
        assert stats.p50_ms is not None and stats.p50_ms <= stats.p95_ms <= stats.p99_ms
        load.set_rate(0)
        sent = load.sent
        await asyncio.sleep(0.2)
        assert load.sent == sent
    assert (await box.metrics())["demo_requests_total{path=/work,status=500}"] >= 10

    sock = listen()
    port = sock.getsockname()[1]
    sock.close()
    async with LoadGenerator(f"http://127.0.0.1:{port}", rps=50, timeout_s=0.5) as load:
        await until(lambda: load.stats().connection_errors >= 3)
        assert load.stats().error_ratio == 1.0
