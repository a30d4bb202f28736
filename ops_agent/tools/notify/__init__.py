"""Notifications: e-mail (Mailtrap send API, SMTP), Slack incoming webhooks and signed webhooks (Standard
Webhooks), delivered through a durable outbox with retries, per-channel rate limits and fallback.

Wire formats: ../shared/contracts/NOTIFY.md. Public names are listed in `__all__`; internals are private.
"""

from ops_agent.tools.notify._channels import (
    Channel,
    MailtrapChannel,
    SlackWebhookChannel,
    SmtpChannel,
    WebhookChannel,
    parse_retry_after,
)
from ops_agent.tools.notify._models import (
    DeliveryResult,
    Notification,
    NotificationResult,
    NotifyError,
    OutboxEntry,
    Priority,
    WebhookUrlRefused,
)
from ops_agent.tools.notify._outbox import MemoryOutbox, Outbox, SqliteOutbox
from ops_agent.tools.notify._service import (
    NotificationService,
    RateLimiter,
    backoff_delay,
    entry_id,
)
from ops_agent.tools.notify._specs import notify_specs
from ops_agent.tools.notify._signing import (
    WebhookSignatureError,
    sign_webhook,
    signature_headers,
    verify_webhook,
)
from ops_agent.tools.notify._text import escape_html, escape_slack
from ops_agent.tools.notify._urls import (
    PinnedUrl,
    check_webhook_url,
    forbidden_reason,
    resolve_webhook_url,
)

__all__ = [
    "Channel",
    "DeliveryResult",
    "MailtrapChannel",
    "MemoryOutbox",
    "Notification",
    "NotificationResult",
    "NotificationService",
    "NotifyError",
    "Outbox",
    "OutboxEntry",
    "PinnedUrl",
    "Priority",
    "RateLimiter",
    "SlackWebhookChannel",
    "SmtpChannel",
    "SqliteOutbox",
    "WebhookChannel",
    "WebhookSignatureError",
    "WebhookUrlRefused",
    "backoff_delay",
    "check_webhook_url",
    "entry_id",
    "escape_html",
    "escape_slack",
    "forbidden_reason",
    "notify_specs",
    "parse_retry_after",
    "resolve_webhook_url",
    "sign_webhook",
    "signature_headers",
    "verify_webhook",
]
