"""The offline planner: the seed's tasks and everyday paraphrases become tool calls; the rest is reported."""

from __future__ import annotations

import pytest

from ops_agent.config import ServiceCheck
from ops_agent.ooda import RulePlanner
from ops_agent.services import open_services

FACTS = {"services": ["api", "web-frontend", "billing.v2"]}


@pytest.fixture
def planner(services) -> RulePlanner:
    return RulePlanner(services.registry)


def calls(planner: RulePlanner, task: str) -> list[tuple[str, dict]]:
    return [(call.tool, call.arguments) for call in planner.plan(task, FACTS).calls]


METRICS = ("get_system_metrics", {})
ALL_HEALTH = ("check_service_health", {})


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("show system metrics and check the health of the configured services", [METRICS, ALL_HEALTH]),
        ("Get system metrics", [METRICS]),
        ("how's the server doing?", [METRICS]),
        ("what's the CPU and memory usage", [METRICS]),
        ("is the disk space ok on this box", [METRICS]),
        ("check load average", [METRICS]),
        ("check system health", [METRICS]),
        ("are all services up?", [ALL_HEALTH]),
        ("check service health", [ALL_HEALTH]),
        ("Check the health of the api", [("check_service_health", {"service": "api"})]),
        ("is the api up", [("check_service_health", {"service": "api"})]),
        ("ping web-frontend", [("check_service_health", {"service": "web-frontend"})]),
        ("is billing.v2 responding?", [("check_service_health", {"service": "billing.v2"})]),
        (
            "check the health of api and web-frontend",
            [("check_service_health", {"service": "api"}), ("check_service_health", {"service": "web-frontend"})],
        ),
        ("please show metrics, then check health of all services. thanks", [METRICS, ALL_HEALTH]),
        ("CPU usage; memory usage; disk usage", [METRICS]),  # the same call is planned once
    ],
)
def test_everyday_phrasings(planner, task, expected):
    plan = planner.plan(task, FACTS)
    assert [(c.tool, c.arguments) for c in plan.calls] == expected
    assert plan.not_understood == []


def test_an_unknown_service_is_reported_not_guessed(planner):
    plan = planner.plan("check the health of the payments service", FACTS)
    assert plan.calls == []
    assert "no configured service is called 'payments'" in plan.not_understood[0]
    assert "api, web-frontend, billing.v2" in plan.not_understood[0]


def test_negations_are_not_acted_on(planner):
    plan = planner.plan("show metrics but don't check the api", FACTS)
    assert [(c.tool, c.arguments) for c in plan.calls] == [METRICS]
    plan = planner.plan("do not check health of the api", FACTS)
    assert plan.calls == [] and "negation" in plan.not_understood[0]


def test_a_deploy_without_a_known_project_asks_which(planner):
    plan = planner.plan("Deploy latest changes to production", FACTS)
    assert plan.calls == [] and "which project?" in plan.not_understood[0]


@pytest.mark.parametrize(
    "task",
    [
        "write a poem about the ocean",
        "make me a sandwich",
    ],
)
def test_what_no_tool_can_do_is_said_plainly(planner, task):
    plan = planner.plan(task, FACTS)
    assert plan.calls == []
    assert plan.not_understood and "no available tool matches" in plan.not_understood[0]


def test_partly_understood_tasks_keep_what_was_understood(planner):
    plan = planner.plan("show metrics and order pizza for the team", FACTS)
    assert [(c.tool, c.arguments) for c in plan.calls] == [METRICS]
    assert plan.not_understood == ["'order pizza for the team': no available tool matches this"]


def test_plans_are_deterministic(planner):
    task = "check the health of api and web-frontend, then show cpu"
    assert all(calls(planner, task) == calls(planner, task) for _ in range(20))


async def test_a_task_that_is_not_understood_reports_so(services):
    report = await services.registry.invoke(services.identity, "execute_task", {"task": "make me a sandwich"})
    assert report.status == "not_understood"
    assert report.steps == []
    assert "make me a sandwich" in report.summary


async def test_health_of_a_configured_service_end_to_end(tmp_path):
    from tests.conftest import make_settings
    from tests.test_monitoring import local_http_server

    with local_http_server() as base:
        settings = make_settings(tmp_path)
        settings = settings.model_copy(
            update={"services": [ServiceCheck(name="api", url=f"{base}/health"),
                                 ServiceCheck(name="web", url=f"{base}/broken")]}
        )
        async with open_services(settings) as services:
            report = await services.registry.invoke(
                services.identity, "execute_task", {"task": "is the api up? and how about web"}
            )
    assert report.status == "completed"
    assert [step.arguments for step in report.steps] == [{"service": "api"}, {"service": "web"}]
    assert report.steps[0].output["services"][0]["status"] == "up"
    assert report.steps[1].output["services"][0]["status"] == "down"
    assert "1/1 services up: api up" in report.summary
    assert "web down (expected HTTP 200, got 503)" in report.summary


DEPLOY_FACTS = {"services": ["api"], "projects": ["web", "shop-api"], "default_project": "web"}


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("Deploy latest changes to production", [("deploy", {"project": "web", "environment": "production"})]),
        ("ship shop-api to staging from branch release-2",
         [("deploy", {"project": "shop-api", "environment": "staging", "branch": "release-2"})]),
        ("deploy web", [("deploy", {"project": "web", "environment": "preview"})]),
        ("roll back production", [("rollback", {"project": "web"})]),
        ("rollback dpl_abc123 to dpl_old999", [("rollback", {"deployment_id": "dpl_abc123", "target_deployment_id": "dpl_old999"})]),
        ("undo the last deploy of shop-api", [("rollback", {"project": "shop-api"})]),
        ("what's the status of dpl_abc123", [("get_deployment_status", {"deployment_id": "dpl_abc123"})]),
        ("show recent deployments of shop-api", [("list_deployments", {"project": "shop-api"})]),
        ("deployment history", [("list_deployment_history", {})]),
        ("who deployed shop-api?", [("list_deployment_history", {"project": "shop-api"})]),
        ("list env vars of shop-api", [("list_env_vars", {"project": "shop-api"})]),
        ("cancel the build dpl_abc123", [("cancel_deployment", {"deployment_id": "dpl_abc123"})]),
    ],
)
def test_deployment_phrasings(planner, task, expected):
    plan = planner.plan(task, DEPLOY_FACTS)
    assert [(c.tool, c.arguments) for c in plan.calls] == expected
    assert plan.not_understood == []


def test_never_deploy_when_told_not_to(planner):
    plan = planner.plan("check the api health but don't deploy to production", DEPLOY_FACTS)
    assert [c.tool for c in plan.calls] == ["check_service_health"]
    assert "negation" in plan.not_understood[0]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("add a custom metric api_latency as avg(response_time)",
         [("add_custom_metric", {"name": "api_latency", "query": "avg(response_time)"})]),
        ("define metric error_pct = errors / requests * 100",
         [("add_custom_metric", {"name": "error_pct", "query": "errors / requests * 100"})]),
        ("query avg(system_cpu_percent[5m])", [("query_metrics", {"query": "avg(system_cpu_percent[5m])"})]),
        ("what is p95(response_time_ms{service=\"api\"}[1h])?",
         [("query_metrics", {"query": 'p95(response_time_ms{service="api"}[1h])'})]),
        ("show custom metrics", [("get_custom_metrics", {})]),
        ('query sum(errors{service="api", region="eu"}[5m]) and show cpu',
         [("query_metrics", {"query": 'sum(errors{service="api", region="eu"}[5m])'}), ("get_system_metrics", {})]),
        ("what's the latency of the api", [("get_performance_metrics", {"service": "api"})]),
        ("response times p95", [("get_performance_metrics", {})]),
    ],
)
def test_metric_phrasings(planner, task, expected):
    plan = planner.plan(task, DEPLOY_FACTS)
    assert [(c.tool, c.arguments) for c in plan.calls] == expected
    assert plan.not_understood == []


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            "Analyze error logs from the past hour and identify root causes",
            [("analyze_error_patterns", {"time_range": "1h"}), ("detect_anomalies", {"window": "1h"})],
        ),
        ("what are the most common errors today", [("analyze_error_patterns", {"time_range": "24h"})]),
        ("show error patterns for the api over the last 7 days",
         [("analyze_error_patterns", {"time_range": "7d", "service": "api"})]),
        ("summarize the warnings in the logs from the past 30 minutes",
         [("analyze_error_patterns", {"time_range": "30m", "severity": "warning"})]),
        ("search the logs for timeout", [("search_logs", {"time_range": "1h", "query": "timeout"})]),
        ('find logs containing "connection refused" in the last 15 minutes',
         [("search_logs", {"time_range": "15m", "query": '"connection refused"'})]),
        ("show errors from the billing.v2 service in the last 2 hours",
         [("search_logs", {"time_range": "2h", "severity": "error", "service": "billing.v2"})]),
        ("grep logs for ECONNRESET", [("search_logs", {"time_range": "1h", "query": "ECONNRESET"})]),
        ("any anomalies in the logs?", [("detect_anomalies", {"window": "15m"})]),
        ("is there anything unusual in the web-frontend logs in the past hour",
         [("detect_anomalies", {"window": "1h", "service": "web-frontend"})]),
        ("why is the api failing", [("detect_anomalies", {"window": "1h", "service": "api"})]),
        ("pull the vercel logs for dpl_abc123", [("collect_vercel_logs", {"deployment": "dpl_abc123"})]),
        ("how many logs do we have", [("log_stats", {})]),
    ],
)
def test_log_phrasings(planner, task, expected):
    plan = planner.plan(task, FACTS)
    assert [(c.tool, c.arguments) for c in plan.calls] == expected
    assert plan.not_understood == []


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("alert me if error_rate is above 5%",
         [("create_alert_rule", {"name": "error_rate_alert", "condition": "error_rate > 5%", "severity": "high"})]),
        ("Monitor API error rate and alert if >5%",  # the seed's task; api is a configured service here
         [("create_alert_rule", {"name": "api_error_rate_alert", "condition": 'error_rate{service="api"} > 5%',
                                 "severity": "high"})]),
        ("monitor the queue depth and alert if above 1000",
         [("create_alert_rule", {"name": "queue_depth_alert", "condition": "queue_depth > 1000", "severity": "high"})]),
        ("monitor the api latency and page us when p95 > 500",
         [("create_alert_rule", {"name": "p95_alert", "condition": "p95 > 500", "severity": "high"})]),
        ("show active alerts", [("get_active_alerts", {})]),
        ('search the logs for "connection refused"', [("search_logs", {"time_range": "1h", "query": '"connection refused"'})]),
        ("any alerts?", [("get_active_alerts", {})]),
        ("show the alert history", [("get_alert_history", {})]),
        ("list alert rules", [("list_alert_rules", {})]),
        ("what's the auto-fix rate", [("get_remediation_stats", {})]),
        ('notify the team on slack "deploy finished"',
         [("send_notification", {"channels": ["slack"], "message": "deploy finished"})]),
    ],
)
def test_alert_and_notification_phrasings(planner, task, expected):
    plan = planner.plan(task, FACTS)
    assert [(c.tool, c.arguments) for c in plan.calls] == expected
    assert plan.not_understood == []
