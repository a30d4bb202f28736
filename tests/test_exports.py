"""The public API is exactly what `ops_agent.__all__` lists."""

import ops_agent


def test_all_is_complete_and_importable():
    public = {name for name in dir(ops_agent) if not name.startswith("_")}
    modules = {
        "cli", "config", "errors", "governance", "ooda", "redact", "registry", "services", "stores", "telemetry", "tools",
        "worker", "peers", "untrusted",
    }
    assert public - modules - {"annotations"} == set(ops_agent.__all__)
    for name in ops_agent.__all__:
        assert getattr(ops_agent, name) is not None


def test_seed_names_are_exported():
    assert ops_agent.OpsAgent is ops_agent.OpsAgentOODA
    assert {"OpsAgentOODA", "DeploymentTool", "MonitoringTool", "LogAnalysisTool", "Settings", "BudgetExceeded",
            "PermissionDenied"} <= set(
        ops_agent.__all__
    )
