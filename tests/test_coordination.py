"""Coordination flows: a fix request to the Dev Agent and a post-incident summary to the FAQ Agent, sent to a
real peer MCP server (`tests/peer_server.py`, over stdio) through the gate, from a tool call and from a task."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from ops_agent.config import load_settings
from ops_agent.errors import ToolFailed, ToolRetry
from ops_agent.ooda import TaskReport
from ops_agent.services import Services, open_services
from ops_agent.tools.incidents.coordination import fit_arguments, render
from ops_agent.tools.incidents.models import Diagnosis, ProposedAction, RemediationReport
from sandbox.vercel import EmulatorConfig, VercelEmulator
from tests.attack_suite import promote_to_full_access

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "demo-app"
SECRET_LINE = "ERROR TypeError: cannot read 'id' of undefined at handler (src/api/orders.ts:42) password=hunter2"


# -- filling a peer tool's fields -------------------------------------------------------------------------


MESSAGE = {"kind": "fix_request", "title": "api: bad deployment", "service": "api", "samples": ["a", "b"]}


def test_fields_are_filled_by_name_title_text_and_object() -> None:
    schema = {"properties": {"title": {"type": "string"}, "details": {"type": "string"}, "service": {"type": "string"},
                             "request": {"type": "object"}, "samples": {"type": "string"}, "other": {"type": "string"}},
              "required": ["title"]}
    arguments = fit_arguments(schema, MESSAGE, render(MESSAGE), "dev_agent__x")
    assert arguments["title"] == "api: bad deployment" and arguments["service"] == "api"
    assert arguments["details"].startswith("# api: bad deployment") and "- a" in arguments["details"]
    assert arguments["request"] == MESSAGE
    assert json.loads(arguments["samples"]) == ["a", "b"]  # a string field gets JSON
    assert "other" not in arguments


def test_a_required_field_nothing_fills_is_named() -> None:
    schema = {"properties": {"ticket_queue": {"type": "string"}}, "required": ["ticket_queue"]}
    with pytest.raises(ToolFailed, match="dev_agent__x: cannot fill its required field.s. ticket_queue from a fix_request"):
        fit_arguments(schema, MESSAGE, render(MESSAGE), "dev_agent__x")


# -- end to end, with a real peer ----------------------------------------------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Services, VercelEmulator]]:
    async with VercelEmulator(EmulatorConfig(build_time_s=0.05, seed=5, rate_limit=100_000)) as emulator:
        config = {
            "storage": {"path": str(tmp_path / "ops.db")},
            "vercel": {"api_url": emulator.base_url, "team_id": emulator.team_id, "poll_interval_s": 0.02,
                       "projects": [PROJECT], "default_project": PROJECT},
            # the emulator answers 401 without a token: "up" here, so a diagnosis rests on the logs
            "services": [{"name": "api", "url": f"{emulator.base_url}/v6/deployments", "expected_status": 401,
                          "project": PROJECT}],
            "peers": {"dev_agent": {"command": [sys.executable, "-m", "tests.peer_server"], "cwd": str(ROOT),
                                    "role": "dev", "timeout_s": 20}},
            "incidents": {"fix_requests_to": "dev_agent__open_fix_request", "summaries_to": "dev_agent__echo"},
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        settings = load_settings(tmp_path / "config.yaml", environ={"VERCEL_TOKEN": emulator.token})
        async with open_services(settings) as services:
            await promote_to_full_access(services)  # a peer call is outward: staging_access at least
            yield services, emulator


async def test_a_fix_request_carries_the_evidence_to_the_dev_agent(world) -> None:
    services, emulator = world
    for _ in range(2):
        await services.registry.invoke(services.identity, "deploy", {"project": PROJECT, "environment": "production"})
    newest = emulator.state.production_deployment_id(PROJECT)
    await services.registry.invoke(services.identity, "ingest_logs", {"lines": [SECRET_LINE] * 5, "service": "api"})
    handoff = await services.registry.invoke(services.identity, "request_code_fix", {"service": "api"})
    request = handoff.message
    assert request["kind"] == "fix_request" and request["service"] == "api"
    assert request["suspected_change"]["deployment_id"] == newest
    assert request["patterns"] and "TypeError" in request["patterns"][0]["template"]
    assert "src/api/orders.ts:42" in request["samples"][0]  # the sample keeps where it happened
    assert "hunter2" not in json.dumps(handoff.model_dump()) and "[REDACTED]" in request["samples"][0]
    assert handoff.arguments["title"] == request["title"] and newest in handoff.arguments["details"]
    assert handoff.answer["structured"]["id"].startswith("FIX-")  # what the peer answered
    calls = [r for r in await services.gate.audit.recent(limit=20) if r["tool"] in ("request_code_fix", "dev_agent__open_fix_request")]
    assert {(r["tool"], r["action"], r["decision"]) for r in calls} == {
        ("request_code_fix", "coordinate:handoff", "allowed"), ("dev_agent__open_fix_request", "peer:call", "allowed")}


async def test_a_post_incident_summary_goes_to_the_faq_tool(world) -> None:
    services, _ = world
    with pytest.raises(ToolRetry, match="no remediation of 'api' on record"):
        await services.registry.invoke(services.identity, "share_incident_summary", {"service": "api"})
    diagnosis = Diagnosis(service="api", onset="2026-11-27T10:00:00Z", cause="bad_deployment", summary="roll back",
                          evidence=["errors began 1 s after dpl_x"], fixable=True, recommendations=["add a canary"])
    action = ProposedAction(tool="rollback", arguments={"project": PROJECT}, reason="bad deployment")
    services.incidents.reports.append((time.time(), RemediationReport(
        diagnosis=diagnosis, action_taken=action, action_ok=True, outcome="rolled back", verified=True,
        verification="7 healthy probes", escalated=False)))
    handoff = await services.registry.invoke(services.identity, "share_incident_summary", {"service": "api"})
    assert handoff.peer_tool == "dev_agent__echo"
    text = handoff.arguments["text"]
    assert text.startswith("# api: bad deployment, fixed") and "add a canary" in text
    assert handoff.answer["content"] and "rolled back" in json.dumps(handoff.answer)


async def test_the_offline_planner_hands_a_fix_request_to_the_dev_agent(world) -> None:
    services, _ = world
    await services.registry.invoke(services.identity, "ingest_logs", {"lines": [SECRET_LINE] * 3, "service": "api"})
    report = await services.registry.invoke(services.identity, "execute_task", {"task": "open a fix request for the api"})
    assert isinstance(report, TaskReport)
    assert [(s.tool, s.ok) for s in report.steps] == [("request_code_fix", True)], report.summary
    assert report.status == "completed"


async def test_an_unset_destination_is_a_clear_error(tmp_path: Path) -> None:
    async with open_services(load_settings(environ={"OPS_AGENT_DB": str(tmp_path / "x.db")})) as services:
        with pytest.raises(ToolFailed, match="incidents.fix_requests_to is not set"):
            await services.registry.invoke(services.identity, "request_code_fix", {"service": "api"})


async def test_no_fix_request_when_the_diagnosis_does_not_point_at_code(world) -> None:
    services, _ = world
    await services.registry.invoke(services.identity, "check_service_health", {"service": "api"})
    diagnosis = await services.registry.invoke(services.identity, "diagnose_incident", {"service": "api"})
    assert diagnosis.cause not in ("bad_deployment", "application_errors", "crashing", "unknown"), diagnosis.cause
    with pytest.raises(ToolRetry, match=f"does not point at code \\({diagnosis.cause}"):
        await services.registry.invoke(services.identity, "request_code_fix", {"service": "api"})
