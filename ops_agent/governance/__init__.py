"""Governance: the gate every tool call passes, and the stores behind it (reputation, cost, audit)."""

from ops_agent.governance.audit import AuditLog, AuditRecord, LogAuditLog, SqliteAuditLog
from ops_agent.governance.gate import Caller, GovernanceGate
from ops_agent.governance.ledger import BudgetLimits, BudgetUsage, CostLedger, SqliteCostLedger, TokenUsage, usd_micros
from ops_agent.governance.policy import ActionRule, PolicyTable
from ops_agent.governance.rate_limit import RateLimiter, RateLimits
from ops_agent.governance.reputation import (
    INITIAL_SCORE,
    REPUTATION_DELTAS,
    AgentRecord,
    ReputationStore,
    SqliteReputationStore,
)

__all__ = [
    "INITIAL_SCORE",
    "REPUTATION_DELTAS",
    "ActionRule",
    "AgentRecord",
    "AuditLog",
    "AuditRecord",
    "BudgetLimits",
    "BudgetUsage",
    "Caller",
    "CostLedger",
    "GovernanceGate",
    "LogAuditLog",
    "PolicyTable",
    "RateLimiter",
    "RateLimits",
    "ReputationStore",
    "SqliteAuditLog",
    "SqliteCostLedger",
    "SqliteReputationStore",
    "TokenUsage",
    "usd_micros",
]
