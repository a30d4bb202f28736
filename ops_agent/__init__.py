"""ops-agent: an operations agent behind a governance gate. The public API is what `__all__` lists."""

from ops_agent.config import Settings, load_settings
from ops_agent.errors import (
    BudgetExceeded,
    ConfigError,
    GovernanceRefusal,
    GovernanceUnavailable,
    InvalidArguments,
    OpsAgentError,
    PermissionDenied,
    PlannerError,
    PlannerStepsExceeded,
    RateLimited,
    ToolFailed,
    ToolRetry,
    ToolTimeout,
    UnknownTool,
    UpstreamError,
    UpstreamTimeout,
)
from ops_agent.governance import Caller, GovernanceGate
from ops_agent.ooda.agent import OpsAgent, OpsAgentOODA
from ops_agent.registry import ToolRegistry, ToolSpec
from ops_agent.services import Services, open_services
from ops_agent.tools.deployment import DeploymentTool
from ops_agent.tools.logs import LogAnalysisTool
from ops_agent.tools.monitoring import MonitoringTool

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "Caller",
    "ConfigError",
    "DeploymentTool",
    "GovernanceGate",
    "GovernanceRefusal",
    "GovernanceUnavailable",
    "InvalidArguments",
    "LogAnalysisTool",
    "MonitoringTool",
    "OpsAgent",
    "OpsAgentError",
    "OpsAgentOODA",
    "PermissionDenied",
    "PlannerError",
    "PlannerStepsExceeded",
    "RateLimited",
    "Services",
    "Settings",
    "ToolFailed",
    "ToolRegistry",
    "ToolRetry",
    "ToolSpec",
    "ToolTimeout",
    "UnknownTool",
    "UpstreamError",
    "UpstreamTimeout",
    "load_settings",
    "open_services",
]
