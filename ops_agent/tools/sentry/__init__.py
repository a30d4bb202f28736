"""Sentry as an error source: a client for its issues API, issues and webhook events as log records, the
tools, and background polling. Contract: ../shared/contracts/SENTRY.md; guide: docs/SENTRY.md."""

from ops_agent.tools.sentry._client import SentryClient, SentryError, next_cursor
from ops_agent.tools.sentry._records import (
    SIGNATURE_HEADER,
    event_record,
    issue_record,
    parse_time,
    valid_hook_signature,
    webhook_records,
)
from ops_agent.tools.sentry._source import (
    NOT_CONFIGURED,
    SentryCollectReport,
    SentryIssue,
    SentryIssueList,
    SentrySource,
)
from ops_agent.tools.sentry._tools import sentry_specs

__all__ = [
    "NOT_CONFIGURED",
    "SIGNATURE_HEADER",
    "SentryClient",
    "SentryCollectReport",
    "SentryError",
    "SentryIssue",
    "SentryIssueList",
    "SentrySource",
    "event_record",
    "issue_record",
    "next_cursor",
    "parse_time",
    "sentry_specs",
    "valid_hook_signature",
    "webhook_records",
]
