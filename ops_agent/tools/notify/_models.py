"""What a notification is, what one delivery attempt returns, and the errors channels raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ops_agent.errors import ToolRetry, UpstreamError

__all__ = [
    "DeliveryResult",
    "DeliveryStatus",
    "Notification",
    "NotificationResult",
    "NotifyError",
    "OutboxEntry",
    "Priority",
    "WebhookUrlRefused",
]

Priority = Literal["critical", "high", "medium", "low"]
# pending: waiting for its (next) attempt; sending: an attempt is in flight (or was, when a process died);
# delivered / failed: final. A failed entry may name the fallback entry that replaced it.
DeliveryStatus = Literal["pending", "sending", "delivered", "failed"]
FINAL: frozenset[str] = frozenset({"delivered", "failed"})


class Notification(BaseModel):
    """One notification for one channel, as stored in the outbox. Text is already redacted (not escaped:
    each channel escapes for its own format when it renders)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable per notification x channel; the webhook-id and the e-mail Message-ID.")
    notification_id: str = Field(description="The notification this delivery belongs to (caller's idempotency key).")
    channel: str = Field(description="mailtrap, smtp, slack, webhook or webhook:<name>.")
    subject: str = ""
    message: str = ""
    priority: Priority = "medium"
    to: list[str] = Field(default_factory=list, description="E-mail recipients.")
    payload: dict[str, Any] | None = Field(None, description="Webhook data (the seed's send_webhook payload).")
    event_type: str = Field("notification", description="Webhook body `type`.")
    url: str | None = Field(None, description="Ad-hoc webhook URL (checked before storing and again before sending).")
    created_at: float = Field(0.0, description="Unix seconds when the notification was accepted.")
    fallback_from: str | None = Field(None, description="The channel that failed, when this is a fallback delivery.")


class DeliveryResult(BaseModel):
    """The outcome of delivering one notification on one channel (as a channel returns it, or as the outbox
    records it)."""

    channel: str
    entry_id: str = ""
    status: DeliveryStatus = "delivered"
    attempts: int = 0
    status_code: int | None = None
    provider_ids: list[str] = Field(default_factory=list, description="Mailtrap message_ids, SMTP Message-ID.")
    error: str | None = Field(None, description="Why the last attempt failed; never holds a secret.")
    next_attempt_at: float | None = Field(None, description="Unix seconds of the next attempt, when pending.")
    fallback_entry: str | None = Field(None, description="Entry that replaced this one after it failed.")
    fallback_of: str | None = Field(None, description="Entry this one replaces.")


class NotificationResult(BaseModel):
    """Every delivery of one notification. `success` means every channel (or its fallback) delivered."""

    notification_id: str
    success: bool
    deliveries: list[DeliveryResult]


@dataclass
class OutboxEntry:
    id: str
    notification: Notification
    status: DeliveryStatus = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    updated_at: float = 0.0
    last_error: str | None = None
    status_code: int | None = None
    provider_ids: list[str] = field(default_factory=list)
    fallback_of: str | None = None
    fallback_entry: str | None = None

    @property
    def channel(self) -> str:
        return self.notification.channel

    def result(self) -> DeliveryResult:
        return DeliveryResult(
            channel=self.channel,
            entry_id=self.id,
            status=self.status,
            attempts=self.attempts,
            status_code=self.status_code,
            provider_ids=list(self.provider_ids),
            error=self.last_error,
            next_attempt_at=self.next_attempt_at if self.status == "pending" else None,
            fallback_entry=self.fallback_entry,
            fallback_of=self.fallback_of,
        )


class NotifyError(UpstreamError):
    """A channel could not deliver. `retryable` says whether the same request may succeed later;
    `retry_after_s` is the server's Retry-After when it gave one."""

    def __init__(
        self,
        service: str,
        public_message: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(service, public_message, status_code=status_code, retryable=retryable)
        self.retry_after_s = retry_after_s


class WebhookUrlRefused(ToolRetry):
    """A webhook URL failed the egress check (scheme, address, syntax); names the problem, never the path
    or query (which may hold a credential)."""
