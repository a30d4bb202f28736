"""Deployment flows end to end: the governed tools, the real client, the Vercel emulator over a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from mcp_server import build_server
from ops_agent.config import Settings, load_settings
from ops_agent.errors import PermissionDenied, ToolFailed, ToolRetry
from ops_agent.governance import Caller
from ops_agent.services import Services, open_services
from sandbox.vercel import EmulatorConfig, VercelEmulator
from tests.vercel_contract import SUBSET, Contract

PROJECT = "demo-app"


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract(SUBSET)


@pytest.fixture
def checked() -> list[str]:
    return []


@pytest.fixture
async def http(contract: Contract, checked: list[str]) -> AsyncIterator[httpx2.AsyncClient]:
    """ops-agent's HTTP client, with every request it sends to Vercel and every answer checked
    against the OpenAPI subset."""

    async def check(response: httpx2.Response) -> None:
        await response.aread()
        contract.check(response.request, response)
        checked.append(f"{response.request.method} {response.request.url.path}")

    async with httpx2.AsyncClient(event_hooks={"response": [check]}) as client:
        yield client


def deploy_settings(tmp_path: Path, emulator: VercelEmulator, **vercel: object) -> Settings:
    config = tmp_path / "config.yaml"
    lines = "\n".join(f"  {key}: {value}" for key, value in vercel.items())
    config.write_text(
        f"storage:\n  path: {tmp_path / 'ops.db'}\n"
        f"vercel:\n  api_url: {emulator.base_url}\n  team_id: {emulator.team_id}\n  poll_interval_s: 0.02\n"
        f"  projects: [{PROJECT}]\n{lines}\n"
    )
    return load_settings(config, environ={"VERCEL_TOKEN": emulator.token})


@pytest.fixture
async def emulator() -> AsyncIterator[VercelEmulator]:
    async with VercelEmulator(EmulatorConfig(build_time_s=0.1, fail_branches=["broken"], seed=7, rate_limit=100_000)) as emu:
        yield emu


@pytest.fixture
async def ops(tmp_path, emulator, http) -> AsyncIterator[Services]:
    async with open_services(deploy_settings(tmp_path, emulator), http=http) as services:
        yield services


async def promote_agent(services: Services, caller: Caller, successes: int) -> None:
    """Earn reputation the way the gate gives it: successful tasks (+2 each), probation included."""
    for _ in range(successes):
        await services.gate.task_outcome(caller, True, "earned in test")


async def deploy(services: Services, caller: Caller, **arguments):
    return await services.registry.invoke(caller, "deploy", {"project": PROJECT, **arguments})


async def test_a_preview_deploy_streams_progress_and_is_recorded(ops, emulator, checked):
    caller = ops.identity
    seen: list[str] = []

    async def progress(done, total, message):
        seen.append(message)

    result = await ops.registry.invoke(caller, "deploy", {"project": PROJECT, "environment": "preview"}, progress=progress)
    assert result.state == "READY" and result.environment == "preview"
    assert result.deployment_url.startswith("https://") and result.id.startswith("dpl_")
    assert result.branch == "main" and result.duration_s > 0
    assert any(message.endswith("BUILDING") for message in seen) and seen[-1].endswith("READY")
    assert result.build_log_tail  # the build's own log lines came through
    [entry] = (await ops.registry.invoke(caller, "list_deployment_history", {})).entries
    assert (entry.action, entry.project, entry.environment, entry.outcome) == ("deploy", PROJECT, "preview", "ready")
    assert entry.deployment_id == result.id and entry.requested_by == "ops_agent" and entry.duration_s > 0
    audit = [r for r in await ops.gate.audit.recent(20) if r["tool"] == "deploy"]
    assert audit[0]["action"] == "deploy:preview" and audit[0]["decision"] == "allowed"
    # every exchange went through the contract check
    assert {"POST /v13/deployments", f"GET /v13/deployments/{result.id}"} <= set(checked)


async def test_a_build_that_finishes_between_polls_still_reports_the_states_it_went_through(ops, emulator):
    caller = ops.identity
    started = await ops.registry.invoke(caller, "deploy", {"project": PROJECT, "environment": "preview", "wait": False})
    await asyncio.sleep(0.3)  # the whole build (0.1 s) happens before the first poll
    seen: list[str] = []

    async def progress(done, total, message):
        seen.append(message)

    result = await ops.registry.invoke(caller, "wait_for_deployment", {"deployment_id": started.id}, progress=progress)
    assert result.state == "READY"
    states = [message.removeprefix(f"{started.id} ") for message in seen if message.startswith(started.id)]
    assert states == ["QUEUED", "BUILDING", "READY"]  # from the build's own events: no poll saw QUEUED or BUILDING


async def test_a_new_agent_cannot_deploy_production_or_staging(ops, emulator):
    for environment, needs in (("production", "prod_full_access"), ("staging", "staging_access")):
        with pytest.raises(PermissionDenied, match=f"deploy:{environment} needs {needs}"):
            await deploy(ops, ops.identity, environment=environment)
    assert emulator.state.snapshot()["counters"]["createDeploymentRequests"] == 0


async def test_sandbox_projects_are_open_to_sandbox_agents(tmp_path, emulator, http):
    async with open_services(deploy_settings(tmp_path, emulator, sandbox_projects=f"[{PROJECT}]"), http=http) as services:
        first = await deploy(services, services.identity, environment="production")
        second = await deploy(services, services.identity, environment="production", branch="release")
        assert emulator.state.production_deployment_id(PROJECT) == second.id
        rolled = await services.registry.invoke(
            services.identity, "rollback", {"deployment_id": second.id, "project": PROJECT}
        )
        assert rolled.now_serving_id == first.id
        actions = {r["action"] for r in await services.gate.audit.recent(50) if r["decision"] == "allowed"}
        assert {"deploy:sandbox", "rollback:sandbox"} <= actions


async def test_production_deploys_and_rollback_semantics(ops, emulator):
    caller = ops.identity
    await promote_agent(ops, caller, 30)  # 160: prod_full_access
    v0 = await deploy(ops, caller, environment="production")
    v1 = await deploy(ops, caller, environment="production")
    v2 = await deploy(ops, caller, environment="production")
    assert emulator.state.production_deployment_id(PROJECT) == v2.id

    # undo v2: production goes back to the most recent READY production deployment before it
    undo = await ops.registry.invoke(caller, "rollback", {"deployment_id": v2.id})
    assert (undo.undone_deployment_id, undo.now_serving_id) == (v2.id, v1.id)
    assert emulator.state.production_deployment_id(PROJECT) == v1.id

    # an explicit target overrides
    chosen = await ops.registry.invoke(caller, "rollback", {"deployment_id": v2.id, "target_deployment_id": v0.id})
    assert chosen.now_serving_id == v0.id and emulator.state.production_deployment_id(PROJECT) == v0.id

    # after a rollback Vercel stops assigning production automatically: a new build waits, STAGED,
    # until it is promoted (which turns automatic assignment back on)
    v3 = await deploy(ops, caller, environment="production")
    assert emulator.state.production_deployment_id(PROJECT) == v0.id
    await ops.registry.invoke(caller, "promote", {"deployment_id": v3.id})
    assert emulator.state.production_deployment_id(PROJECT) == v3.id
    v4 = await deploy(ops, caller, environment="production")
    assert emulator.state.production_deployment_id(PROJECT) == v4.id

    # no deployment id: undo what production serves now
    current = await ops.registry.invoke(caller, "rollback", {"project": PROJECT})
    assert (current.undone_deployment_id, current.now_serving_id) == (v4.id, v3.id)

    history = (await ops.registry.invoke(caller, "list_deployment_history", {"action": "rollback"})).entries
    assert len(history) == 3 and all(entry.outcome == "done" for entry in history)


async def test_rollback_is_a_recovery_action_at_prod_low_risk(ops, emulator):
    caller = ops.identity
    await promote_agent(ops, caller, 30)
    good = await deploy(ops, caller, environment="production")
    bad = await deploy(ops, caller, environment="production")
    # 160 + 2 x 2 = 164; eight failures (-24) bring it to 140: prod_low_risk
    for _ in range(8):
        await ops.gate.task_outcome(caller, False, "test")
    assert ops.gate.level(await ops.gate.agent(caller)) == "prod_low_risk"
    with pytest.raises(PermissionDenied, match="deploy:production needs prod_full_access"):
        await deploy(ops, caller, environment="production")  # -8: 132, still prod_low_risk
    low_risk = await deploy(ops, caller, environment="production", low_risk=True)
    assert low_risk.state == "READY"
    undo = await ops.registry.invoke(caller, "rollback", {"deployment_id": low_risk.id})
    assert undo.now_serving_id == bad.id
    assert good.id != bad.id


async def test_rollback_refuses_what_it_cannot_do(ops, emulator):
    caller = ops.identity
    await promote_agent(ops, caller, 40)  # each refused request below costs 3
    preview = await deploy(ops, caller, environment="preview")
    with pytest.raises(ToolRetry, match="instant rollback applies to production"):
        await ops.registry.invoke(caller, "rollback", {"deployment_id": preview.id})
    first = await deploy(ops, caller, environment="production")
    with pytest.raises(ToolFailed, match="no READY production deployment of demo-app older than"):
        await ops.registry.invoke(caller, "rollback", {"deployment_id": first.id})
    with pytest.raises(ToolRetry, match="not a production deployment of the same project"):
        await ops.registry.invoke(caller, "rollback", {"deployment_id": first.id, "target_deployment_id": preview.id})


async def test_a_failed_build_fails_the_call_and_costs_reputation(ops, emulator):
    with pytest.raises(ToolFailed, match=r"ended ERROR"):
        await deploy(ops, ops.identity, environment="preview", branch="broken")
    [entry] = (await ops.registry.invoke(ops.identity, "list_deployment_history", {"outcome": "failed"})).entries
    assert entry.branch == "broken" and entry.error
    assert (await ops.gate.agent(ops.identity)).score == 97


async def test_the_same_idempotency_key_deploys_once(ops, emulator):
    key = "release-2026-11-27-001"
    first = await deploy(ops, ops.identity, environment="preview", idempotency_key=key)
    again = await deploy(ops, ops.identity, environment="preview", idempotency_key=key)
    assert again.id == first.id and again.reused and not first.reused
    assert len(emulator.state.snapshot()["deployments"]) == 1


async def test_a_lost_answer_does_not_make_a_second_deployment(tmp_path, http):
    config = EmulatorConfig(build_time_s=0.05, lost_response_rate=1.0, seed=1, rate_limit=100_000)
    async with VercelEmulator(config) as emulator:
        async with open_services(deploy_settings(tmp_path, emulator), http=http) as services:
            result = await deploy(services, services.identity, environment="preview")
        snapshot = emulator.state.snapshot()
    assert result.state == "READY" and result.reused  # found again by its idempotency key
    assert len(snapshot["deployments"]) == 1


async def test_transient_errors_are_ridden_out(tmp_path, http):
    config = EmulatorConfig(build_time_s=0.05, transient_error_rate=0.3, seed=3, rate_limit=100_000)
    async with VercelEmulator(config) as emulator:
        async with open_services(deploy_settings(tmp_path, emulator), http=http) as services:
            results = [await deploy(services, services.identity, environment="preview") for _ in range(5)]
        snapshot = emulator.state.snapshot()
    assert all(result.state == "READY" for result in results)
    assert len(snapshot["deployments"]) == 5


async def test_cancel_a_running_build(tmp_path, http):
    async with VercelEmulator(EmulatorConfig(build_time_s=30, seed=2)) as emulator:
        async with open_services(deploy_settings(tmp_path, emulator), http=http) as services:
            await promote_agent(services, services.identity, 5)  # staging_access: deploy:cancel
            started = await deploy(services, services.identity, environment="preview", wait=False)
            assert started.state in ("QUEUED", "BUILDING")
            canceled = await services.registry.invoke(
                services.identity, "cancel_deployment", {"deployment_id": started.id}
            )
            assert canceled.state == "CANCELED"
            status = await services.registry.invoke(services.identity, "get_deployment_status", {"deployment_id": started.id})
            assert status.state == "CANCELED"


async def test_env_vars_never_show_their_values(ops, emulator):
    caller = ops.identity
    secret = "s3cr3t-value-do-not-echo"
    with pytest.raises(PermissionDenied, match="env:write:production"):
        await ops.registry.invoke(
            caller, "set_env_var", {"project": PROJECT, "key": "API_SECRET", "value": secret, "environments": ["production"]}
        )
    await promote_agent(ops, caller, 5)  # staging_access
    change = await ops.registry.invoke(
        caller, "set_env_var", {"project": PROJECT, "key": "API_SECRET", "value": secret, "environments": ["preview", "staging"]}
    )
    assert change.change == "created"
    again = await ops.registry.invoke(
        caller, "set_env_var", {"project": PROJECT, "key": "API_SECRET", "value": secret + "2", "environments": ["preview"]}
    )
    assert again.change == "updated"
    listed = await ops.registry.invoke(caller, "list_env_vars", {"project": PROJECT})
    assert "API_SECRET" in [v.key for v in listed.variables]
    assert secret not in listed.model_dump_json()
    deleted = await ops.registry.invoke(
        caller, "delete_env_var", {"project": PROJECT, "key": "API_SECRET", "environments": ["preview", "staging"]}
    )
    assert deleted.change == "deleted"
    assert "API_SECRET" not in [v.key for v in (await ops.registry.invoke(caller, "list_env_vars", {"project": PROJECT})).variables]
    assert secret not in repr(await ops.gate.audit.recent(100))


async def test_history_survives_a_restart(tmp_path, emulator, http):
    settings = deploy_settings(tmp_path, emulator)
    async with open_services(settings, http=http) as services:
        result = await deploy(services, services.identity, environment="preview")
    async with open_services(settings, http=http) as services:
        entries = (await services.registry.invoke(services.identity, "list_deployment_history", {"project": PROJECT})).entries
    assert [entry.deployment_id for entry in entries] == [result.id]


async def test_list_and_status(ops, emulator):
    first = await deploy(ops, ops.identity, environment="preview")
    listed = await ops.registry.invoke(ops.identity, "list_deployments", {"project": PROJECT, "environment": "preview"})
    assert [d.id for d in listed.deployments] == [first.id]
    status = await ops.registry.invoke(ops.identity, "get_deployment_status", {"deployment_id": first.id})
    assert status.state == "READY" and status.project == PROJECT


async def test_the_planner_deploys_and_reports_the_url(tmp_path, emulator, http):
    settings = deploy_settings(tmp_path, emulator, sandbox_projects=f"[{PROJECT}]", default_project=PROJECT)
    async with open_services(settings, http=http) as services:
        report = await services.registry.invoke(
            services.identity, "execute_task", {"task": "Deploy latest changes to production", "priority": "high"}
        )
    assert report.status == "completed", report.summary
    assert [step.tool for step in report.steps] == ["deploy"]
    assert report.steps[0].arguments == {"project": PROJECT, "environment": "production"}
    assert report.deployment_url and report.deployment_url.startswith("https://")


async def test_mcp_callers_get_build_progress(tmp_path, emulator, http):
    async with open_services(deploy_settings(tmp_path, emulator), http=http) as services:
        seen: list[str] = []

        async def on_progress(progress, total, message):
            seen.append(message)

        async with Client(build_server(services)) as client:
            result = await client.call_tool(
                "deploy", {"project": PROJECT, "environment": "preview"}, progress_callback=on_progress
            )
    assert not result.is_error, result.content
    assert result.structured_content["state"] == "READY"
    assert any("BUILDING" in message for message in seen) and any("READY" in message for message in seen)


async def test_without_a_token_the_tools_say_how_to_configure(tmp_path):
    async with open_services(load_settings(environ={"OPS_AGENT_DB": str(tmp_path / "x.db")})) as services:
        with pytest.raises(ToolFailed, match="Vercel is not configured: set VERCEL_TOKEN"):
            await services.registry.invoke(services.identity, "list_deployments", {})


def test_the_cli_deploys_and_lists_history(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ops_agent.cli import app

    with VercelEmulator(EmulatorConfig(build_time_s=0.05, seed=5)) as emulator:
        monkeypatch.setenv("OPS_AGENT_CONFIG", str(tmp_path / "cli.yaml"))
        (tmp_path / "cli.yaml").write_text(
            f"storage:\n  path: {tmp_path / 'cli.db'}\nvercel:\n  api_url: {emulator.base_url}\n"
            f"  team_id: {emulator.team_id}\n  poll_interval_s: 0.02\n"
        )
        monkeypatch.setenv("VERCEL_TOKEN", emulator.token)
        runner = CliRunner()
        deployed = runner.invoke(app, ["deploy", PROJECT, "--env", "preview", "--json", "-q"])
        assert deployed.exit_code == 0, deployed.output
        result = json.loads(deployed.stdout)
        assert result["state"] == "READY"
        denied = runner.invoke(app, ["deploy", PROJECT, "--env", "production", "-q"])
        assert denied.exit_code == 1 and "deploy:production needs prod_full_access" in denied.output
        history = runner.invoke(app, ["deployments", "--json"])
        assert history.exit_code == 0
        assert [entry["deployment_id"] for entry in json.loads(history.stdout)] == [result["id"]]
        table = runner.invoke(app, ["deployments"])
        assert table.exit_code == 0 and "deploy" in table.stdout and "ready" in table.stdout


def test_python_m_sandbox_serves_the_api(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), "--build-time-s", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx2.get(f"http://127.0.0.1:{port}/v9/projects/{PROJECT}",
                                    headers={"Authorization": "Bearer sandbox-token"}, timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "the emulator did not start"
                time.sleep(0.1)
        assert answer.status_code == 200 and answer.json()["name"] == PROJECT
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert f"VERCEL_API_URL=http://127.0.0.1:{port}" in output and "VERCEL_TOKEN=sandbox-token" in output


async def test_a_refused_promotion_is_recorded_as_failed(ops, emulator):
    from ops_agent.errors import UpstreamError

    caller = ops.identity
    await promote_agent(ops, caller, 30)
    served = await deploy(ops, caller, environment="production")
    with pytest.raises(UpstreamError, match="deployment_already_promoted"):
        await ops.registry.invoke(caller, "promote", {"deployment_id": served.id})
    [entry] = (await ops.registry.invoke(caller, "list_deployment_history", {"action": "promote"})).entries
    assert entry.outcome == "failed" and "deployment_already_promoted" in entry.error


async def test_vercel_build_and_runtime_logs_are_pulled_once_into_the_index(ops, emulator, checked):
    caller = ops.identity
    built = await deploy(ops, caller, environment="preview")
    emulator.state.emit_runtime_log(built.id, "GET /api/orders 200", path="/api/orders")
    emulator.state.emit_runtime_log(
        built.id, "Error: connect ECONNREFUSED 10.0.0.5:5432 token=abc123secretvalue", level="error", status=500
    )
    first = await ops.registry.invoke(caller, "collect_vercel_logs", {"deployment": built.id})
    build_lines = len([e for e in emulator.state.deployment_events(emulator.team_id, built.id) if e["payload"]["text"]])
    assert first.accepted == build_lines + 2 and build_lines > 0
    again = await ops.registry.invoke(caller, "collect_vercel_logs", {"deployment": built.id})
    assert again.accepted == 0  # nothing new since the first pull
    emulator.state.emit_runtime_log(built.id, "GET /api/orders 200 after", path="/api/orders")
    assert (await ops.registry.invoke(caller, "collect_vercel_logs", {"deployment": built.id})).accepted == 1

    found = await ops.registry.invoke(caller, "search_logs", {"query": "ECONNREFUSED", "time_range": "1h"})
    record = found.records[0]
    assert found.total == 1 and record.severity == "error" and record.service == PROJECT
    assert record.attributes["status"] == 500 and record.attributes["deploymentId"] == built.id
    assert "abc123secretvalue" not in record.message
    assert any(path.endswith("/runtime-logs") for path in checked)  # contract-checked on the wire
