"""The notification tools for the registry: send to configured channels, or to a webhook URL a caller names."""

from __future__ import annotations

import re
from typing import Any, Literal

from mcp.types import ToolAnnotations
from pydantic import Field

from ops_agent.registry import Intent, ToolContext, ToolInput, ToolSpec
from ops_agent.tools.notify._models import NotificationResult
from ops_agent.tools.notify._service import NotificationService

__all__ = ["notify_specs"]

Priority = Literal["critical", "high", "medium", "low"]


def _notification_id() -> Any:
    return Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Idempotency key: a repeated call with the same id sends nothing new and returns the first's deliveries.",
    )


class SendNotificationInput(ToolInput):
    channels: list[str] = Field(
        min_length=1, max_length=10,
        description="email, mailtrap, smtp, slack or webhook:<name> (the configured ones).",
    )
    message: str = Field(min_length=1, max_length=20_000, description="The text (escaped for each channel).")
    subject: str = Field("", max_length=300)
    priority: Priority = "medium"
    to: list[str] | None = Field(None, max_length=50, description="E-mail recipients (default notify.email_recipients).")
    notification_id: str | None = _notification_id()


class SendWebhookInput(ToolInput):
    url: str = Field(min_length=8, max_length=2000, description="https only (unless allow-listed); no private addresses.")
    payload: dict[str, Any] = Field(description="The JSON body's `data`; signed per Standard Webhooks.")
    event_type: str = Field("notification", max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    notification_id: str | None = _notification_id()


class NotificationIdInput(ToolInput):
    notification_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


def _line(result: NotificationResult) -> str:
    states = ", ".join(f"{d.channel} {d.status}" for d in result.deliveries)
    return f"{result.notification_id}: {states}"


def notify_specs(service: NotificationService) -> list[ToolSpec]:
    async def send_notification(args: SendNotificationInput, ctx: ToolContext) -> NotificationResult:
        return await service.send_notification(
            channels=args.channels, message=args.message, subject=args.subject, priority=args.priority, to=args.to,
            notification_id=args.notification_id,
        )

    async def send_webhook(args: SendWebhookInput, ctx: ToolContext) -> NotificationResult:
        return await service.send_webhook(
            url=args.url, payload=args.payload, event_type=args.event_type, notification_id=args.notification_id
        )

    async def get_notification_status(args: NotificationIdInput, ctx: ToolContext) -> NotificationResult:
        return await service.status(args.notification_id)

    outward = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
    return [
        ToolSpec(
            name="send_notification", title="Send a notification",
            description="Send a message to configured channels (e-mail, Slack, named webhooks) through the durable "
            "outbox: retried, rate-limited, falling back when a channel keeps failing. Returns each delivery.",
            input_model=SendNotificationInput, output_model=NotificationResult, handler=send_notification,
            actions=("notify:configured",), annotations=outward, timeout_s=60, summarize=_line,
            idempotency_field="notification_id", content_fields=("message", "subject", "priority"),
            intents=(Intent(patterns=(r"\b(notify|message|tell|ping)\b.*\b(on\s+)?(slack|e-?mail|team|on-?call)\b",),
                            arguments=_notify_arguments),),
        ),
        ToolSpec(
            name="send_webhook", title="Send a signed webhook",
            description="POST a signed JSON event (Standard Webhooks) to a URL: https only unless allow-listed; "
            "private, loopback and metadata addresses refused; redirects not followed.",
            input_model=SendWebhookInput, output_model=NotificationResult, handler=send_webhook,
            actions=("notify:external",), annotations=outward, timeout_s=60, summarize=_line,
            idempotency_field="notification_id", content_fields=("payload", "event_type"),
        ),
        ToolSpec(
            name="get_notification_status", title="Notification status",
            description="Where a notification's deliveries stand: delivered, pending (next attempt), failed, fallback.",
            input_model=NotificationIdInput, output_model=NotificationResult, handler=get_notification_status,
            actions=("read",), annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
            timeout_s=10, summarize=_line,
        ),
    ]


def _notify_arguments(clause: str, facts: Any) -> list[dict[str, Any]] | str:
    channel = "slack" if re.search(r"(?i)\bslack\b", clause) else "email" if re.search(r"(?i)\be-?mail\b", clause) else "slack"
    quoted = re.search(r'"([^"]+)"|\'([^\']+)\'', clause)
    if quoted is None:
        return 'say what to send in quotes, e.g. notify the team on slack "deploy finished"'
    return [{"channels": [channel], "message": quoted.group(1) or quoted.group(2)}]
