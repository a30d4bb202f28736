"""/metrics: the agent's own figures in Prometheus exposition format, fed by the gate."""

from __future__ import annotations

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from mcp_server import build_http_app
from ops_agent.config import load_settings
from ops_agent.errors import PermissionDenied
from ops_agent.services import open_services


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(services, headers: dict | None = None) -> httpx2.Response:
    app = build_http_app(services)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        return await client.get("/metrics", headers=headers or {})


async def test_metrics_count_calls_decisions_and_show_the_present(services):
    await services.registry.invoke(services.identity, "get_system_metrics", {})
    await services.registry.invoke(services.identity, "get_system_metrics", {})
    try:
        await services.registry.invoke(services.identity, "deploy", {"project": "web", "environment": "production"})
    except PermissionDenied:
        pass
    response = await scrape(services)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("ops_agent_tool_calls_total", (("decision", "allowed"), ("outcome", "ok"), ("tool", "get_system_metrics")))] == 2
    assert found[("ops_agent_tool_calls_total", (("decision", "denied_permission"), ("outcome", "refused"), ("tool", "deploy")))] == 1
    assert found[("ops_agent_gate_decisions_total", (("decision", "denied_permission"),))] == 1
    assert found[("ops_agent_tool_call_duration_seconds_count", (("tool", "get_system_metrics"),))] == 2
    assert found[("ops_agent_reputation_score", (("agent", "ops_agent"),))] == 92
    assert found[("ops_agent_permission_level", (("agent", "ops_agent"), ("level", "sandbox_only")))] == 1
    assert found[("ops_agent_budget_used_ratio", (("agent", "ops_agent"), ("unit", "tokens"), ("window", "day")))] == 0
    assert 0 <= found[("ops_agent_system_cpu_percent", ())] <= 100
    assert found[("ops_agent_alerts", (("state", "firing"),))] == 0  # no alert engine yet, so no alerts

    async def counts() -> dict[str, int]:
        return {"firing": 2, "pending": 1}

    services.telemetry.alert_counts = counts  # what the alert engine will provide
    found = samples((await scrape(services)).text)
    assert found[("ops_agent_alerts", (("state", "firing"),))] == 2
    assert found[("ops_agent_alerts", (("state", "resolved"),))] == 0


async def test_metrics_need_a_token_when_tokens_are_configured(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'db.sqlite'}\nmcp:\n  tokens:\n    scraper: tok-scrape-0123456789\n")
    async with open_services(load_settings(config, environ={})) as services:
        assert (await scrape(services)).status_code == 401
        assert (await scrape(services, {"Authorization": "Bearer wrong-token-000"})).status_code == 401
        ok = await scrape(services, {"Authorization": "Bearer tok-scrape-0123456789"})
    assert ok.status_code == 200 and "ops_agent_tool_calls" in ok.text
    assert "tok-scrape" not in ok.text
