"""The governance gate on real SQLite: registration, the seed's deltas and levels, probation, budgets,
degraded mode, and the invariant that no handler is reachable around the gate."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import pytest
from mcp.types import ToolAnnotations
from pydantic import BaseModel

from ops_agent.errors import (
    BudgetExceeded,
    GovernanceUnavailable,
    OpsAgentError,
    PermissionDenied,
    ToolFailed,
    ToolTimeout,
)
from ops_agent.governance import INITIAL_SCORE, REPUTATION_DELTAS, BudgetLimits, Caller, PolicyTable
from ops_agent.registry import ToolInput, ToolSpec
from ops_agent.services import open_services
from tests.conftest import make_settings


class DeployInput(ToolInput):
    environment: Literal["preview", "staging", "production"]
    low_risk: bool = False
    token: str | None = None


class Done(BaseModel):
    done: bool


def deploy_spec(ran: list, *, fail: Exception | None = None, delay_s: float = 0.0) -> ToolSpec:
    """A consequential tool for the tests: its action depends on its arguments, like the real deploy."""

    async def handler(args: DeployInput, ctx) -> Done:
        ran.append(args)
        if delay_s:
            await asyncio.sleep(delay_s)
        if fail is not None:
            raise fail
        return Done(done=True)

    def action(args: DeployInput) -> str:
        if args.environment == "production" and args.low_risk:
            return "deploy:production:low_risk"
        return f"deploy:{args.environment}"

    return ToolSpec(
        name="test_deploy",
        description="test deploy",
        input_model=DeployInput,
        output_model=Done,
        handler=handler,
        actions=("deploy:preview", "deploy:staging", "deploy:production:low_risk", "deploy:production"),
        action=action,
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True),
        timeout_s=0.2,
    )


async def raise_score(services, caller: Caller, successes: int) -> None:
    for _ in range(successes):
        await services.gate.task_outcome(caller, True, "test setup")


async def score_of(services, caller: Caller) -> tuple[int, str]:
    agent = await services.gate.reputation.get_agent(caller.agent)
    return agent.score, services.gate.level(agent)


async def test_registration_follows_the_seed(services, caller, caplog):
    agent = await services.gate.agent(caller)
    assert (agent.score, agent.successes, agent.agent_type) == (INITIAL_SCORE, 0, "ops_agent")
    assert services.gate.level(agent) == "sandbox_only"
    messages = [record.getMessage() for record in caplog.get_records("setup")]
    assert "✅ Governance modules initialized" in messages
    assert f"✅ Registered with Governance (agent_id: {agent.id})" in messages
    assert "   Permission Level: sandbox_only, Reputation Score: 100" in messages


async def test_registration_is_idempotent(settings):
    async with open_services(settings) as first:
        first_id = (await first.gate.agent(first.identity)).id
    async with open_services(settings) as second:
        assert (await second.gate.agent(second.identity)).id == first_id


@pytest.mark.parametrize(
    ("score", "level"),
    [(0, "sandbox_only"), (89, "sandbox_only"), (90, "staging_access"), (129, "staging_access"),
     (130, "prod_low_risk"), (159, "prod_low_risk"), (160, "prod_full_access"), (400, "prod_full_access")],
)
def test_levels_by_score_are_the_seed_table(score, level):
    assert PolicyTable.load().level_for(score, successes=99, probation_tasks=5) == level


def test_probation_keeps_a_new_agent_sandboxed_whatever_its_score():
    policy = PolicyTable.load()
    assert policy.level_for(100, successes=0, probation_tasks=5) == "sandbox_only"
    assert policy.level_for(170, successes=4, probation_tasks=5) == "sandbox_only"
    assert policy.level_for(100, successes=5, probation_tasks=5) == "staging_access"
    assert policy.level_for(100, successes=0, probation_tasks=0) == "staging_access"


def test_deltas_are_the_seed_table():
    assert REPUTATION_DELTAS == {
        "task_success": 2, "task_failure": -3, "budget_exceeded": -10, "permission_denied": -8,
    }


async def test_success_earns_two_and_is_logged(services, caller, caplog):
    ran: list = []
    services.registry.register(deploy_spec(ran))
    result = await services.registry.invoke(caller, "test_deploy", {"environment": "preview"})
    assert result == Done(done=True) and len(ran) == 1
    assert await score_of(services, caller) == (102, "sandbox_only")
    messages = [record.getMessage() for record in caplog.records]
    assert "✅ Budget check passed for test_deploy" in messages
    assert "✅ Permission check passed for operation: deploy:preview" in messages
    assert "✅ Recorded reputation event: task_success" in messages
    [record] = await services.gate.audit.recent(1)
    assert (record["tool"], record["action"], record["decision"], record["outcome"]) == (
        "test_deploy", "deploy:preview", "allowed", "ok",
    )


async def test_failure_costs_three(services, caller):
    services.registry.register(deploy_spec([], fail=ToolFailed("build failed")))
    with pytest.raises(ToolFailed, match="build failed"):
        await services.registry.invoke(caller, "test_deploy", {"environment": "preview"})
    assert (await score_of(services, caller))[0] == 97
    [record] = await services.gate.audit.recent(1)
    assert (record["outcome"], record["error"]) == ("error", "build failed")


async def test_permission_denied_costs_eight_and_never_runs_the_handler(services, caller):
    ran: list = []
    services.registry.register(deploy_spec(ran))
    with pytest.raises(PermissionDenied) as caught:
        await services.registry.invoke(caller, "test_deploy", {"environment": "production"})
    assert ran == []
    message = caught.value.public_message
    assert "deploy:production needs prod_full_access" in message and "sandbox_only" in message
    assert "probation: 0 of 5" in message
    assert (await score_of(services, caller))[0] == 92
    [record] = await services.gate.audit.recent(1)
    assert (record["decision"], record["outcome"]) == ("denied_permission", "refused")


async def test_staging_after_probation(services, caller):
    ran: list = []
    services.registry.register(deploy_spec(ran))
    with pytest.raises(PermissionDenied):
        await services.registry.invoke(caller, "test_deploy", {"environment": "staging"})
    await raise_score(services, caller, 5)  # 92 + 10 = 102, probation done
    assert await score_of(services, caller) == (102, "staging_access")
    await services.registry.invoke(caller, "test_deploy", {"environment": "staging"})
    with pytest.raises(PermissionDenied):
        await services.registry.invoke(caller, "test_deploy", {"environment": "production", "low_risk": True})


async def test_production_needs_full_access_or_low_risk_at_prod_low_risk(services, caller):
    ran: list = []
    services.registry.register(deploy_spec(ran))
    await raise_score(services, caller, 15)  # 130
    assert await score_of(services, caller) == (130, "prod_low_risk")
    await services.registry.invoke(caller, "test_deploy", {"environment": "production", "low_risk": True})
    with pytest.raises(PermissionDenied, match="needs prod_full_access"):
        await services.registry.invoke(caller, "test_deploy", {"environment": "production"})
    # 130 + 2 (the low-risk deploy) - 8 (the refusal) = 124; 18 more successes reach 160
    await raise_score(services, caller, 18)
    assert await score_of(services, caller) == (160, "prod_full_access")
    await services.registry.invoke(caller, "test_deploy", {"environment": "production"})
    assert [args.environment for args in ran] == ["production", "production"]


async def test_reads_are_allowed_at_every_level_and_never_score(services, caller):
    for _ in range(40):
        await services.gate.task_outcome(caller, False, "test setup")
    assert await score_of(services, caller) == (0, "sandbox_only")  # the score floors at 0
    for _ in range(3):
        await services.registry.invoke(caller, "get_system_metrics", {})
        await services.registry.invoke(caller, "check_service_health", {})
    assert (await score_of(services, caller))[0] == 0


async def test_spent_budget_refuses_action_costs_ten_once_and_still_allows_reads(services, caller):
    ran: list = []
    services.registry.register(deploy_spec(ran))
    agent = await services.gate.agent(caller)
    await services.gate.ledger.record(agent.id, services.gate.limits.hourly_tokens, 0, "test")
    for _ in range(2):
        with pytest.raises(BudgetExceeded, match="hourly tokens"):
            await services.registry.invoke(caller, "test_deploy", {"environment": "preview"})
    assert ran == []
    assert (await score_of(services, caller))[0] == 90  # -10 once per hour, not per refusal
    await services.registry.invoke(caller, "get_system_metrics", {})
    [record] = [r for r in await services.gate.audit.recent(5) if r["decision"] == "denied_budget"][:1]
    assert record["tool"] == "test_deploy"


async def test_near_a_limit_every_check_reads_the_spend_of_other_processes(services, caller):
    # Far from every limit the pre-check may use a figure up to a second old; from 80% on it reads the
    # ledger each time, so spend booked by another process (here: straight into the ledger) refuses at once.
    ran: list = []
    services.registry.register(deploy_spec(ran))
    agent = await services.gate.agent(caller)
    limit = services.gate.limits.hourly_tokens
    await services.gate.ledger.record(agent.id, limit * 85 // 100, 0, "test")
    await services.registry.invoke(caller, "test_deploy", {"environment": "preview"})
    await services.gate.ledger.record(agent.id, limit, 0, "test")
    with pytest.raises(BudgetExceeded, match="hourly tokens"):
        await services.registry.invoke(caller, "test_deploy", {"environment": "preview"})
    assert len(ran) == 1


async def test_concurrent_reservations_never_overspend(services, caller):
    agent = await services.gate.agent(caller)
    limits = BudgetLimits(hourly_tokens=1000, daily_tokens=10_000, hourly_usd_micros=10**9, daily_usd_micros=10**9)

    async def reserve() -> bool:
        try:
            await services.gate.ledger.reserve(agent.id, 150, 10, limits)
            return True
        except BudgetExceeded:
            return False

    outcomes = await asyncio.gather(*(reserve() for _ in range(30)))
    assert sum(outcomes) == 6  # 6 x 150 = 900 <= 1000 < 7 x 150
    assert (await services.gate.ledger.usage(agent.id)).hour_tokens == 900


async def test_unsettled_reservations_expire(services, caller, monkeypatch):
    agent = await services.gate.agent(caller)
    limits = BudgetLimits.from_settings(services.settings.governance.budget)
    reservation = await services.gate.ledger.reserve(agent.id, 500, 0, limits)
    assert (await services.gate.ledger.usage(agent.id)).hour_tokens == 500
    await services.gate.ledger.settle(reservation, 120, 7, "claude-sonnet-5-5")
    assert (await services.gate.ledger.usage(agent.id)).hour_tokens == 120
    await services.gate.ledger.reserve(agent.id, 500, 0, limits)
    import ops_agent.governance.ledger as ledger_module

    real_time = ledger_module.time.time
    monkeypatch.setattr(ledger_module.time, "time", lambda: real_time() + ledger_module.LEASE_S + 1)
    assert (await services.gate.ledger.usage(agent.id)).hour_tokens == 120  # the lease ran out


async def test_timeouts_and_crashes_are_clean_errors(services, caller, caplog):
    services.registry.register(deploy_spec([], delay_s=5))
    with pytest.raises(ToolTimeout, match="within 0.2 s"):
        await services.registry.invoke(caller, "test_deploy", {"environment": "preview"})

    crash = ToolSpec(
        name="test_crash", description="crashes", input_model=DeployInput, output_model=Done,
        handler=deploy_spec([], fail=RuntimeError("secret internals /etc/shadow")).handler,
        actions=("deploy:preview",), annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False),
    )
    services.registry.register(crash)
    with pytest.raises(ToolFailed) as caught:
        await services.registry.invoke(caller, "test_crash", {"environment": "preview"})
    assert "internal error (reference" in caught.value.public_message
    assert "shadow" not in caught.value.public_message
    assert any("tool test_crash crashed" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_audit_records_are_redacted(tmp_path):
    settings = make_settings(tmp_path, VERCEL_TOKEN="vercel-secret-value-123")
    async with open_services(settings) as services:
        services.registry.register(deploy_spec([]))
        caller = services.identity
        await services.registry.invoke(caller, "test_deploy", {"environment": "preview", "token": "abc123secret"})
        with pytest.raises(Exception):
            await services.registry.invoke(caller, "test_deploy", {"environment": "vercel-secret-value-123"})
        records = await services.gate.audit.recent(10)
    text = repr(records)
    assert "abc123secret" not in text and "vercel-secret-value-123" not in text
    assert records[-1]["arguments"]["token"] == "[REDACTED]"


async def test_degraded_mode_allows_reads_only(tmp_path, caplog):
    blocked = tmp_path / "not-a-file"
    blocked.mkdir()
    settings = make_settings(tmp_path, OPS_AGENT_DB=str(blocked))
    async with open_services(settings) as services:
        assert services.gate.degraded
        assert "⚠️ Could not register with Governance (degraded mode)" in [r.getMessage() for r in caplog.records]
        ran: list = []
        services.registry.register(deploy_spec(ran))
        await services.registry.invoke(services.identity, "get_system_metrics", {})
        with pytest.raises(GovernanceUnavailable, match="only read-only actions are allowed"):
            await services.registry.invoke(services.identity, "test_deploy", {"environment": "preview"})
        assert ran == []
        # the refusal is still audited, as a log line
        assert any(r.getMessage().startswith("audit ") and "denied_degraded" in r.getMessage() for r in caplog.records)


async def test_fail_open_is_an_explicit_opt_in(tmp_path):
    blocked = tmp_path / "not-a-file"
    blocked.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {blocked}\ngovernance:\n  fail_open: true\n")
    from ops_agent.config import load_settings

    async with open_services(load_settings(config, environ={})) as services:
        ran: list = []
        services.registry.register(deploy_spec(ran))
        await services.registry.invoke(services.identity, "test_deploy", {"environment": "production"})
        assert len(ran) == 1


def test_registry_refuses_duplicates_and_misleading_annotations(services):
    spec = deploy_spec([])
    services.registry.register(spec)
    with pytest.raises(ValueError, match="duplicate tool name"):
        services.registry.register(spec)
    with pytest.raises(ValueError, match="read_only_hint must be False"):
        services.registry.register(
            ToolSpec(name="sneaky", description="", input_model=DeployInput, output_model=Done, handler=spec.handler,
                     actions=("deploy:production",), annotations=ToolAnnotations(read_only_hint=True))
        )
    with pytest.raises(ValueError, match="destructive_hint must be True"):
        services.registry.register(
            ToolSpec(name="quiet", description="", input_model=DeployInput, output_model=Done, handler=spec.handler,
                     actions=("deploy:production",), annotations=ToolAnnotations(destructive_hint=False))
        )
    with pytest.raises(Exception, match="not in the policy table"):
        services.registry.register(
            ToolSpec(name="unknown_action", description="", input_model=DeployInput, output_model=Done,
                     handler=spec.handler, actions=("launch:missiles",))
        )


def test_annotations_agree_with_the_policy_table(services):
    policy = services.gate.policy
    for spec in services.registry.specs():
        kinds = {policy.rule(action).kind for action in spec.actions}
        assert bool(spec.annotations.read_only_hint) == (kinds == {"read"}), spec.name
        if kinds != {"read"}:
            assert spec.annotations.destructive_hint is bool(kinds & {"destructive", "delegate"}), spec.name


async def test_reputation_is_earned_only_at_the_agents_own_level(services):
    """A staging agent must not climb to production on sandbox work (alert rules by the dozen), whether
    called one by one or as tasks; work at its own level earns, and a failure always costs."""
    climber = Caller("climber", via="test")
    for _ in range(services.settings.governance.probation_tasks):  # probation done: staging_access at 110
        await services.gate.task_outcome(climber, True, "granted in test")
    start = await services.gate.agent(climber)
    assert services.gate.level(start) == "staging_access"
    for n in range(6):
        await services.registry.invoke(climber, "create_alert_rule", {"name": f"r{n}", "condition": "system_cpu_percent > 99"})
    report = await services.registry.invoke(climber, "execute_task", {"task": "alert when system_cpu_percent is above 95"})
    assert report.status == "completed", report.summary
    assert (await services.gate.agent(climber)).score == start.score
    with pytest.raises(OpsAgentError):  # a rule on a series that does not exist: the call fails, and that costs
        await services.registry.invoke(climber, "create_alert_rule", {"name": "bad", "condition": "no_such_series > 1"})
    assert (await services.gate.agent(climber)).score == start.score + REPUTATION_DELTAS["task_failure"]
