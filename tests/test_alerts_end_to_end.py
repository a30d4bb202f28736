"""Alerts in the running agent: a rule made through the gate, a breach in the live series, the page at the
real sinks (Slack emulator, Mailtrap emulator, signed-webhook receiver), acknowledgement, resolution, and a
remediation run as a governed task."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from ops_agent.config import load_settings
from ops_agent.errors import ToolRetry
from ops_agent.services import Services, open_services
from sandbox.notify import NotifySinks, SinksConfig
from tests.conftest import paging_notify_config


@pytest.fixture(scope="module")
def sinks() -> Iterator[NotifySinks]:
    with NotifySinks(SinksConfig(slack_rate_per_s=None)) as running:
        yield running


@pytest.fixture
async def agent(tmp_path: Path, sinks: NotifySinks) -> AsyncIterator[Services]:
    sinks.clear(reset_dedup=True)
    config = {
        "storage": {"path": str(tmp_path / "ops.db")},
        "alerts": {"interval_s": 3600, "escalate_after_s": 60},  # cycles are driven by the test
        "notify": paging_notify_config(sinks),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    async with open_services(load_settings(tmp_path / "config.yaml", environ={})) as services:
        yield services


async def call(services: Services, tool: str, **arguments):
    return await services.registry.invoke(services.identity, tool, arguments)


async def test_a_breach_pages_every_channel_of_its_priority_once_and_resolves(agent, sinks):
    await call(agent, "record_metric", name="error_rate", value=1.0)
    rule = await call(agent, "create_alert_rule", name="high_error_rate", condition="error_rate > 5%",
                      severity="critical", channels=["email", "slack"])
    assert rule.severity == "critical"
    await call(agent, "record_metric", name="error_rate", value=12.0)
    evaluator = agent.alerts.evaluator
    await evaluator.cycle(time.time())
    await evaluator.cycle(time.time())  # still firing: deduplicated, nothing new
    await sinks.wait_for(3, timeout_s=10)  # slack + e-mail (Mailtrap) + the pager webhook
    by_channel = {m.channel: m for m in sinks.messages()}
    assert set(by_channel) == {"slack", "mailtrap", "webhook"}
    assert "FIRING high_error_rate" in by_channel["slack"].payload["text"]
    assert by_channel["webhook"].verified and not by_channel["webhook"].duplicate
    [alert] = (await call(agent, "get_active_alerts")).alerts
    assert alert.state == "firing" and alert.notifications == 1
    await agent.telemetry.refresh(agent.gate, None, agent.settings.governance.agent_name)
    assert 'ops_agent_alerts{state="firing"} 1.0' in agent.telemetry.exposition().decode()

    acked = await call(agent, "acknowledge_alert", alert_id=alert.id)
    assert acked.acknowledged_by == agent.settings.governance.agent_name
    await call(agent, "record_metric", name="error_rate", value=0.5)
    await evaluator.cycle(time.time())
    await sinks.wait_for(6, timeout_s=10)
    assert sum("RESOLVED high_error_rate" in str(m.payload) for m in sinks.messages()) == 3
    assert (await call(agent, "get_active_alerts")).alerts == []
    events = [e.event for e in reversed((await call(agent, "get_alert_history", rule="high_error_rate")).events)]
    assert events == ["pending", "firing", "acknowledged", "resolved"]
    audit = {r["tool"] for r in await agent.gate.audit.recent(50)}
    assert {"create_alert_rule", "acknowledge_alert", "get_alert_history"} <= audit


async def test_rules_are_checked_when_created(agent):
    with pytest.raises(ToolRetry, match="no_such_metric"):
        await call(agent, "create_alert_rule", name="ghost", condition="no_such_metric > 1")
    with pytest.raises(ToolRetry, match="channels: 'pagerduty' not configured"):
        await call(agent, "record_metric", name="m", value=1.0)
        await call(agent, "create_alert_rule", name="x", condition="m > 1", channels=["pagerduty"])


async def test_a_remediation_runs_through_the_gate_and_recovery_is_recorded(agent, sinks):
    await call(agent, "record_metric", name="queue_depth", value=900.0)
    await call(agent, "create_alert_rule", name="deep_queue", condition="queue_depth > 100", severity="low",
               remediation={"action": "task", "task": "show system metrics"})
    evaluator = agent.alerts.evaluator
    await evaluator.cycle(time.time())
    await evaluator.settle()
    await call(agent, "record_metric", name="queue_depth", value=3.0)
    await evaluator.cycle(time.time())
    events = {e.event: e for e in (await call(agent, "get_alert_history", rule="deep_queue")).events}
    assert events["remediation_done"].detail["ok"] is True
    assert events["recovered"].detail["human_needed"] is False
    stats = await call(agent, "get_remediation_stats")
    assert stats.remediated == 1 and stats.auto_fix_rate == 1.0 and stats.mttr_s is not None
    tasks = [r for r in await agent.gate.audit.recent(50) if r["tool"] == "execute_task"]
    assert tasks and tasks[0]["via"] == "alerts"  # the remediation passed the gate as a call of its own


async def test_governance_figures_raise_the_seeds_alerts(agent, sinks):
    rules = {r.name: r for r in (await call(agent, "list_alert_rules")).rules}
    assert {"governance_reputation_low", "governance_budget_80", "governance_budget_95",
            "governance_permission_denied"} <= set(rules)
    assert rules["governance_budget_95"].severity == "critical"
    evaluator = agent.alerts.evaluator
    await evaluator.cycle(time.time())
    assert (await call(agent, "get_active_alerts")).alerts == []  # a new agent: nothing to say

    record = await agent.gate.agent(agent.identity)
    limits = agent.gate.limits
    await agent.gate.ledger.record(record.id, int(limits.hourly_tokens * 0.85), 0)  # 85% of the hour's tokens
    from ops_agent.governance import Caller
    from ops_agent.errors import PermissionDenied

    with pytest.raises(PermissionDenied):  # a production deploy is beyond a new agent
        await agent.registry.invoke(Caller("intruder", via="test", agent_type="mcp_client"), "deploy",
                                    {"project": "web", "environment": "production"})
    await evaluator.cycle(time.time())
    firing = {a.rule_name for a in (await call(agent, "get_active_alerts")).alerts}
    assert firing == {"governance_budget_80", "governance_permission_denied"}


async def test_a_built_in_rule_with_a_replaced_condition_is_moved_to_todays(agent):
    from ops_agent.tools.alerts.governance_watch import BUILT_IN_RULES, GovernanceWatch

    tool = agent.alerts
    old = "increase(governance_permission_denied_total[5m]) > 0"  # as a store written before holds it
    rule = await tool.update_alert_rule("governance_permission_denied", severity="high")
    await tool.store.save_rule(rule.model_copy(update={"condition": old}))
    await GovernanceWatch(agent.gate, tool.sources.series, agent.settings.governance.agent_name).install_rules(tool)
    rule = await tool.store.rule("governance_permission_denied")
    assert rule.condition == dict((n, c) for n, c, _ in BUILT_IN_RULES)["governance_permission_denied"]
    assert rule.severity == "high"  # only the condition is moved
    await tool.update_alert_rule("governance_permission_denied", condition="sum(governance_permissions_denied[1m]) > 2")
    await GovernanceWatch(agent.gate, tool.sources.series, agent.settings.governance.agent_name).install_rules(tool)
    assert (await tool.store.rule("governance_permission_denied")).condition.endswith("> 2")  # an engineer's edit stays
