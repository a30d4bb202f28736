"""Every entry point reaches handlers only through the gate, and every tool answers bad input clearly.

The registry is walked, so a tool added later is covered without touching this file, except for one
line of valid sample arguments (the first test insists on it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mcp import Client
from typer.testing import CliRunner

from mcp_server import build_server
from ops_agent.cli import app
from ops_agent.config import load_settings
from ops_agent.errors import InvalidArguments, PermissionDenied
from ops_agent.services import open_services

SAMPLE_ARGUMENTS = {
    "get_system_metrics": {},
    "check_service_health": {},
    "execute_task": {"task": "show system metrics"},
    "diagnose_incident": {"service": "api"},
    "remediate_incident": {"service": "api"},
    "request_code_fix": {"service": "api"},
    "share_incident_summary": {"service": "api"},
    "deploy": {"project": "demo-app", "environment": "preview"},
    "get_deployment_status": {"deployment_id": "dpl_abc123"},
    "wait_for_deployment": {"deployment_id": "dpl_abc123", "timeout_s": 1},
    "list_deployments": {},
    "rollback": {"project": "demo-app"},
    "promote": {"deployment_id": "dpl_abc123"},
    "cancel_deployment": {"deployment_id": "dpl_abc123"},
    "list_env_vars": {"project": "demo-app"},
    "set_env_var": {"project": "demo-app", "key": "FEATURE_FLAG", "value": "on", "environments": ["preview"]},
    "delete_env_var": {"project": "demo-app", "key": "FEATURE_FLAG"},
    "list_deployment_history": {},
    "record_metric": {"name": "api_response_time_ms", "value": 12.5, "labels": {"service": "api"}},
    "add_custom_metric": {"name": "cpu_5m", "query": "avg(system_cpu_percent[5m])"},
    "get_custom_metrics": {},
    "query_metrics": {"query": "avg(system_cpu_percent[5m])"},
    "get_performance_metrics": {},
    "search_logs": {"query": "timeout", "time_range": "1h", "severity": "error"},
    "analyze_error_patterns": {"time_range": "24h"},
    "detect_anomalies": {},
    "ingest_logs": {"lines": ["2026-01-01T00:00:00Z ERROR boom"], "service": "api"},
    "collect_vercel_logs": {"deployment": "dpl_abc123"},
    "list_sentry_issues": {"project": "web", "time_range": "1h"},
    "collect_sentry_issues": {"project": "web", "time_range": "24h"},
    "log_stats": {},
    "send_notification": {"channels": ["slack"], "message": "deploy finished"},
    "send_webhook": {"url": "https://hooks.example.com/ops", "payload": {"event": "test"}},
    "get_notification_status": {"notification_id": "ntf_abc"},
    "create_alert_rule": {"name": "hot_cpu", "condition": "system_cpu_percent > 90 for 5m", "severity": "high"},
    "update_alert_rule": {"name": "hot_cpu", "severity": "critical"},
    "delete_alert_rule": {"name": "hot_cpu"},
    "list_alert_rules": {},
    "get_active_alerts": {},
    "acknowledge_alert": {"alert_id": "abc-123"},
    "resolve_alert": {"alert_id": "abc-123"},
    "silence_alerts": {"matchers": {"rule": "hot_*"}, "duration": "1h"},
    "list_silences": {},
    "expire_silence": {"silence_id": "abc123"},
    "get_alert_history": {},
    "get_remediation_stats": {},
    "run_restart_command": {"name": "restart_api"},
}
WRONG_TYPE = [{"not": ["valid", 1]}]  # a list of objects: wrong for every field of every tool


def locked_down_config(tmp_path: Path) -> Path:
    """A policy that puts every action at prod_full_access, which a new agent does not have."""
    from ops_agent.governance import PolicyTable

    rows = "\n".join(f"    {action}: prod_full_access" for action in PolicyTable.load().rules)
    path = tmp_path / "locked.yaml"
    path.write_text(f"storage:\n  path: {tmp_path / 'locked.db'}\ngovernance:\n  policy:\n{rows}\n")
    return path


def test_every_tool_has_sample_arguments(services):
    assert set(SAMPLE_ARGUMENTS) == {spec.name for spec in services.registry.specs()}


async def test_python_entry_point_cannot_pass_the_gate(tmp_path):
    async with open_services(load_settings(locked_down_config(tmp_path), environ={})) as services:
        for spec in services.registry.specs():
            with pytest.raises(PermissionDenied, match="needs prod_full_access"):
                await services.registry.invoke(services.identity, spec.name, SAMPLE_ARGUMENTS[spec.name])
        refused = {r["tool"] for r in await services.gate.audit.recent(100) if r["decision"] == "denied_permission"}
    assert refused == set(SAMPLE_ARGUMENTS)


async def test_mcp_entry_point_cannot_pass_the_gate(tmp_path):
    async with open_services(load_settings(locked_down_config(tmp_path), environ={})) as services:
        async with Client(build_server(services)) as client:
            for spec in services.registry.specs():
                result = await client.call_tool(spec.name, SAMPLE_ARGUMENTS[spec.name])
                assert result.is_error, spec.name
                assert "permission denied" in result.content[0].text
        records = await services.gate.audit.recent(100)
    assert {r["tool"] for r in records if r["decision"] == "denied_permission"} == set(SAMPLE_ARGUMENTS)
    assert {r["via"] for r in records} == {"mcp-stdio"}


def test_cli_entry_point_cannot_pass_the_gate(tmp_path):
    config = locked_down_config(tmp_path)
    runner = CliRunner()
    for name, arguments in SAMPLE_ARGUMENTS.items():
        result = runner.invoke(app, ["call", name, "--args", json.dumps(arguments), "--config", str(config), "-q"])
        assert result.exit_code == 1, (name, result.output)
        assert "permission denied" in result.output
    result = runner.invoke(app, ["run", "show system metrics", "--config", str(config), "-q"])
    assert result.exit_code == 1 and "permission denied" in result.output


async def test_mcp_tool_list_is_the_registry(services):
    async with Client(build_server(services)) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    specs = {spec.name: spec for spec in services.registry.specs()}
    assert set(listed) == set(specs)
    for name, spec in specs.items():
        assert listed[name].input_schema == spec.input_schema()
        assert listed[name].output_schema == spec.output_schema()
        assert listed[name].annotations == spec.annotations
        assert listed[name].description == spec.description
    planner_tools = {tool["name"]: tool for tool in services.registry.anthropic_tools()}
    assert set(planner_tools) == {s.name for s in specs.values() if s.planner_visible}
    assert "execute_task" not in planner_tools  # a task cannot start a task
    for name, tool in planner_tools.items():
        assert tool["input_schema"] == specs[name].input_schema()


def bad_argument_cases(spec) -> list[tuple[object, str]]:
    """(arguments, the field the error must name) for one tool."""
    schema = spec.input_schema()
    cases: list[tuple[object, str]] = [
        ({**SAMPLE_ARGUMENTS[spec.name], "no_such_field": 1}, r"no_such_field: unknown field"),
        (["not", "an", "object"], r"\(arguments\): must be a JSON object"),
    ]
    for field in schema.get("properties", {}):  # the field, or an item of it (environments.0), is named
        cases.append(({**SAMPLE_ARGUMENTS[spec.name], field: WRONG_TYPE}, rf"[:;] {field}(\.\w+)*: "))
    for field in schema.get("required", []):
        arguments = {k: v for k, v in SAMPLE_ARGUMENTS[spec.name].items() if k != field}
        cases.append((arguments, rf"{field}: required field is missing"))
    return cases


async def test_bad_arguments_to_every_tool_name_the_field(services):
    checked = 0
    for spec in services.registry.specs():
        for arguments, expected in bad_argument_cases(spec):
            with pytest.raises(InvalidArguments) as caught:
                await services.registry.invoke(services.identity, spec.name, arguments)
            assert re.search(expected, caught.value.public_message), (spec.name, arguments)
            assert caught.value.public_message.startswith(f"invalid arguments for {spec.name}:")
            checked += 1
    assert checked >= 3 * len(SAMPLE_ARGUMENTS)
    refused = [r for r in await services.gate.audit.recent(500) if r["decision"] == "invalid"]
    assert len(refused) == checked  # refusals are audited too


async def test_bad_arguments_over_mcp_are_error_results_without_tracebacks(services):
    async with Client(build_server(services)) as client:
        for spec in services.registry.specs():
            for arguments, expected in bad_argument_cases(spec):
                if not isinstance(arguments, dict):
                    continue  # the MCP client itself refuses non-object arguments
                result = await client.call_tool(spec.name, arguments)
                assert result.is_error, (spec.name, arguments)
                text = result.content[0].text
                assert re.search(expected, text) and "Traceback" not in text
        result = await client.call_tool("no_such_tool", {})
        assert result.is_error and "unknown tool 'no_such_tool'; known tools:" in result.content[0].text
        secret_name = f"x{services.settings.governance.agent_name}-sk-ant-api03-AbCdEfGhIjKlMnOp"
        result = await client.call_tool(secret_name, {})
        assert result.is_error and "AbCdEfGhIjKl" not in result.content[0].text
    audited = [r["tool"] for r in await services.gate.audit.recent(500) if r["decision"] == "invalid"]
    assert "no_such_tool" in audited


async def test_legacy_and_modern_protocols_both_work(services):
    for mode, version in (("auto", "2026-07-28"), ("legacy", "2025-11-25")):
        async with Client(build_server(services), mode=mode) as client:
            assert client.protocol_version == version
            result = await client.call_tool("execute_task", {"task": "show system metrics", "priority": "high"})
            assert not result.is_error
            report = result.structured_content
            assert report["status"] == "completed" and report["priority"] == "high"
            assert [step["tool"] for step in report["steps"]] == ["get_system_metrics"]


async def test_progress_reaches_mcp_callers(services):
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with Client(build_server(services)) as client:
        result = await client.call_tool(
            "execute_task", {"task": "metrics and health of all services"}, progress_callback=on_progress
        )
    assert not result.is_error
    assert [message for _, message in seen] == ["calling get_system_metrics", "calling check_service_health"]
