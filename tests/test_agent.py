"""`OpsAgentOODA`, used the way the seed shows it."""

from __future__ import annotations

import pytest

from ops_agent import InvalidArguments, OpsAgent, OpsAgentOODA
from tests.conftest import make_settings


async def test_seed_style_usage(tmp_path):
    ops_agent = OpsAgentOODA(make_settings(tmp_path), vercel_token="vercel-token-from-code", enable_monitoring=True)
    try:
        result = await ops_agent.execute_task(task="show system metrics", priority="high")
    finally:
        await ops_agent.aclose()
    assert result["status"] == "completed"
    assert result["priority"] == "high"
    assert result["steps"][0]["tool"] == "get_system_metrics"
    assert {"deployment_url", "patterns", "recommendations", "summary", "cost"} <= set(result)
    assert ops_agent.settings.vercel.token.get_secret_value() == "vercel-token-from-code"


async def test_context_manager_and_bad_priority(tmp_path):
    async with OpsAgent(make_settings(tmp_path)) as agent:
        with pytest.raises(InvalidArguments, match="priority"):
            await agent.execute_task("show system metrics", priority="whenever")
        report = await agent.execute_task("show system metrics and make coffee")
    assert report["status"] == "partial"
    assert report["not_understood"] == ["'make coffee': no available tool matches this"]


async def test_monitoring_can_be_left_out(tmp_path):
    async with OpsAgentOODA(make_settings(tmp_path), enable_monitoring=False) as agent:
        services = await agent.services()
        names = {spec.name for spec in services.registry.specs()}
        assert "get_system_metrics" not in names and "check_service_health" not in names
        report = await agent.execute_task("show system metrics")
    assert report["status"] == "not_understood"
