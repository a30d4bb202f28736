"""Configuration of the notification sinks. Every key is optional: the defaults give one Slack webhook
(`alerts`), one Mailtrap token, a webhook signing secret and an SMTP server without TLS that accepts mail
with or without AUTH, so a new user can point ops-agent at them at once.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"ops-agent-sandbox-webhook-key-32").decode()

SlackState = Literal["active", "archived", "revoked", "disabled"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackWebhookConfig(_Config):
    """One incoming webhook: `POST /services/{team}/{bot}/{secret}`."""

    name: str = Field("alerts", description="A label for tests and the CLI; also the channel it posts to.")
    team: str = Field("T0SANDBOX", pattern=r"^T[A-Z0-9]+$")
    bot: str = Field("B0SANDBOX", pattern=r"^B[A-Z0-9]+$")
    secret: str = Field("sandboxWebhookSecret0000", pattern=r"^[A-Za-z0-9]+$")
    state: SlackState = Field(
        "active",
        description="archived -> 410 channel_is_archived, revoked -> 403 invalid_token, disabled -> 404 no_service.",
    )

    @property
    def path(self) -> str:
        return f"/services/{self.team}/{self.bot}/{self.secret}"


class SinksConfig(_Config):
    slack_webhooks: list[SlackWebhookConfig] = Field(default_factory=lambda: [SlackWebhookConfig()], min_length=1)
    slack_rate_per_s: float | None = Field(
        1.0, gt=0, description="Messages per second per webhook before 429 rate_limited; None = unlimited."
    )
    slack_burst: int = Field(3, ge=1, description="Messages a webhook may take at once before the rate applies.")

    mailtrap_tokens: list[str] = Field(default_factory=lambda: ["sandbox-mailtrap-token"], min_length=1)

    webhook_secret: str = Field(DEFAULT_WEBHOOK_SECRET, description="whsec_<base64>; used by every hook name.")
    webhook_secrets: dict[str, str] = Field(
        default_factory=dict, description="Per hook name secrets (whsec_…) overriding webhook_secret."
    )
    webhook_tolerance_s: int = Field(300, ge=0, description="Largest |now - webhook-timestamp| accepted.")
    webhook_require_signature: bool = Field(
        True, description="False: unsigned or badly signed deliveries are kept (verified=False) and answered 204."
    )

    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "none", description="starttls: offer STARTTLS; tls: implicit TLS. Uses a self-signed cert made at start."
    )
    smtp_auth_required: bool = Field(False, description="Refuse MAIL FROM before a successful AUTH.")
    smtp_username: str = "sandbox"
    smtp_password: str = "sandbox-smtp-password"

    latency_s: float = Field(0.0, ge=0, description="Added before every answer, on every channel.")

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: str) -> str:
        if not value.startswith("whsec_"):
            raise ValueError("webhook secrets start with whsec_")
        base64.b64decode(value.removeprefix("whsec_"), validate=True)
        return value
