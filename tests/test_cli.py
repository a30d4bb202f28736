"""The command line, as a user runs it: real processes for the main paths, in-process for the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from ops_agent.cli import app

MAIN_JOB = "show system metrics and check the health of the configured services"


def ops_agent(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPS_AGENT_DB": str(tmp_path / "cli.db"), **extra_env}
    env.pop("OPS_AGENT_CONFIG", None)
    env.pop("ANTHROPIC_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "ops_agent", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_main_job_runs_on_embedded_defaults(tmp_path):
    result = ops_agent(tmp_path, "run", MAIN_JOB)
    assert result.returncode == 0, result.stderr
    assert "completed · planner rules" in result.stdout
    assert "get_system_metrics" in result.stdout and "check_service_health" in result.stdout
    # the seed's log lines, on stderr
    assert "INFO:ops_agent.governance:✅ Governance modules initialized" in result.stderr
    assert "✅ Registered with Governance (agent_id: " in result.stderr
    assert "   Permission Level: sandbox_only, Reputation Score: 100" in result.stderr
    assert "✅ Budget check passed for task task-" in result.stderr


def test_run_json_and_then_governance_and_audit(tmp_path):
    result = ops_agent(tmp_path, "run", MAIN_JOB, "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "completed"
    assert [step["tool"] for step in report["steps"]] == ["get_system_metrics", "check_service_health"]
    assert report["cost"] == {"tokens": 0, "usd": 0.0, "llm_requests": 0}

    status = json.loads(ops_agent(tmp_path, "governance", "--json").stdout)
    assert status["permission_level"] == "sandbox_only" and status["reputation_score"] == 100
    assert status["budget"]["daily_tokens"] == {"used": 0, "limit": 2_000_000}

    records = json.loads(ops_agent(tmp_path, "audit", "--json").stdout)
    assert [r["tool"] for r in records][:2] == ["execute_task", "check_service_health"]
    assert {r["via"] for r in records} == {"cli"}


def test_plan_executes_nothing(tmp_path):
    result = ops_agent(tmp_path, "plan", "check cpu, ping the billing service and deploy to prod", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["planner"] == "rules"
    assert plan["calls"] == [{"tool": "get_system_metrics", "arguments": {}}]
    assert len(plan["not_understood"]) == 2
    records = json.loads(ops_agent(tmp_path, "audit", "--json").stdout)
    assert records == []  # nothing ran, so nothing was audited


def test_bad_config_is_a_clear_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("governance:\n  budget:\n    daily_usd: lots\n")
    result = ops_agent(tmp_path, "run", MAIN_JOB, "--config", str(config))
    assert result.returncode == 2
    assert "governance.budget.daily_usd" in result.stderr and "line 3" in result.stderr
    assert "Traceback" not in result.stderr


runner = CliRunner()


def test_tools_lists_the_registry_with_schemas(env):
    result = runner.invoke(app, ["tools", "--json"])
    assert result.exit_code == 0
    tools = {tool["name"]: tool for tool in json.loads(result.stdout)}
    assert {"get_system_metrics", "check_service_health", "execute_task", "deploy", "rollback"} <= set(tools)
    assert tools["check_service_health"]["actions"] == {"health_check": "sandbox_only"}
    assert tools["check_service_health"]["input_schema"]["properties"]["service"]["description"]
    assert tools["get_system_metrics"]["annotations"]["readOnlyHint"] is True
    table = runner.invoke(app, ["tools"])
    assert table.exit_code == 0 and "execute_task" in table.stdout


def test_call_runs_one_tool_through_the_gate(env):
    result = runner.invoke(app, ["call", "get_system_metrics", "-q"])
    assert result.exit_code == 0
    assert "cpu_percent" in json.loads(result.stdout)
    bad = runner.invoke(app, ["call", "check_service_health", "service=nope", "-q"])
    assert bad.exit_code == 1 and "unknown service 'nope'" in bad.output
    unknown = runner.invoke(app, ["call", "launch_rockets", "-q"])
    assert unknown.exit_code == 1 and "unknown tool 'launch_rockets'" in unknown.output
    malformed = runner.invoke(app, ["call", "get_system_metrics", "--args", "{not json"])
    assert malformed.exit_code == 2 and "--args: not valid JSON" in malformed.output
    pair = runner.invoke(app, ["call", "get_system_metrics", "oops"])
    assert pair.exit_code == 2 and "expected KEY=VALUE" in pair.output


def test_run_rejects_a_bad_priority(env):
    result = runner.invoke(app, ["run", MAIN_JOB, "--priority", "urgent", "-q"])
    assert result.exit_code == 1
    assert "priority: Input should be 'low', 'medium', 'high' or 'critical'" in result.output


def test_serve_rejects_an_unknown_transport(env):
    result = runner.invoke(app, ["serve", "--transport", "carrier-pigeon"])
    assert result.exit_code == 2 and "expected stdio or http" in result.output


def test_alerts_commands_manage_rules_silences_and_history(env):
    assert runner.invoke(app, ["call", "record_metric", "name=disk_used_percent", "value=97", "-q"]).exit_code == 0
    created = runner.invoke(app, ["alerts", "create", "disk_full", "disk_used_percent > 95", "--severity", "high"])
    assert created.exit_code == 0, created.output
    assert "rule disk_full (high): disk_used_percent > 95" in created.stdout
    rules = json.loads(runner.invoke(app, ["alerts", "rules", "--json"]).stdout)
    assert [r["name"] for r in rules if not r["name"].startswith("governance_")] == ["disk_full"]
    bad = runner.invoke(app, ["alerts", "create", "broken", "disk_used_percent >"])
    assert bad.exit_code == 1 and "position" in bad.output and "Traceback" not in bad.output
    silenced = runner.invoke(app, ["alerts", "silence", "rule=disk_*", "--for", "2h", "--comment", "resize"])
    assert silenced.exit_code == 0 and "silence " in silenced.stdout
    assert runner.invoke(app, ["alerts", "silence", "nonsense"]).exit_code == 2
    assert "no active alerts" in runner.invoke(app, ["alerts", "active"]).stdout
    assert runner.invoke(app, ["alerts", "history", "--json"]).exit_code == 0
    assert runner.invoke(app, ["alerts", "delete", "disk_full"]).exit_code == 0
    missing = runner.invoke(app, ["alerts", "ack", "nope-1"])
    assert missing.exit_code == 1 and "no alert 'nope-1'" in missing.output
