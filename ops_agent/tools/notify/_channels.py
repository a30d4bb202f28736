"""Channels: one small class per service behind the `Channel` protocol, each mapping its service's
answers to DeliveryResult or NotifyError per ../shared/contracts/NOTIFY.md.

Permanent (retryable=False): rejected credentials (401/403, Slack invalid_token), payload errors
(400/404/422, Slack no_text, channel_is_archived, ...), a refused webhook URL, a redirect (never followed).
Retryable: 429 (with Retry-After), 5xx, 408, timeouts, connection failures.

No error text carries a credential: the Slack webhook URL is itself the credential, so Slack errors name
only the Slack error code; httpx exception text is never copied (it can contain the URL).
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable

import aiosmtplib
import httpx2

from ops_agent.tools.notify._models import DeliveryResult, Notification, NotifyError
from ops_agent.tools.notify._signing import signature_headers
from ops_agent.tools.notify._text import (
    render_email_html,
    render_slack_text,
)
from ops_agent.tools.notify._urls import Resolver, resolve_webhook_url

__all__ = [
    "Channel",
    "MailtrapChannel",
    "SlackWebhookChannel",
    "SmtpChannel",
    "WebhookChannel",
    "parse_retry_after",
]

USER_AGENT = "ops-agent/0.1"
_X_PRIORITY = {"critical": "1 (Highest)", "high": "2 (High)", "medium": "3 (Normal)", "low": "5 (Lowest)"}


@runtime_checkable
class Channel(Protocol):
    """Delivers one notification. Raises NotifyError; returns a DeliveryResult on success."""

    name: str
    # True when the receiver can drop a repeat of the same notification id (Standard Webhooks receivers
    # dedupe on webhook-id); a retry after an ambiguous failure then cannot show up twice.
    dedupes: bool

    async def send(self, notification: Notification) -> DeliveryResult: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _status_error(service: str, response: httpx2.Response, detail: str) -> NotifyError:
    status = response.status_code
    retryable = status in (408, 425, 429) or status >= 500
    retry_after = parse_retry_after(response.headers.get("retry-after")) if retryable else None
    return NotifyError(
        service, f"HTTP {status}{': ' + detail if detail else ''}", status_code=status, retryable=retryable,
        retry_after_s=retry_after,
    )


def _network_error(service: str, exc: httpx2.HTTPError) -> NotifyError:
    # The exception's own text may contain the URL (a credential for Slack): name only its kind.
    kind = "timed out" if isinstance(exc, httpx2.TimeoutException) else f"network error ({type(exc).__name__})"
    return NotifyError(service, kind, retryable=True)


# -- Mailtrap -----------------------------------------------------------------------------------------------


class MailtrapChannel:
    """Mailtrap Email Sending API: POST {api_url}/api/send with a bearer token."""

    dedupes = False  # no idempotency key in the API

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        token: str,
        from_email: str,
        from_name: str | None = None,
        api_url: str = "https://send.api.mailtrap.io",
        default_to: Iterable[str] = (),
        timeout_s: float = 30.0,
        name: str = "mailtrap",
    ) -> None:
        self.http = http
        self.name = name
        self._token = token
        self.from_email = from_email
        self.from_name = from_name
        self.api_url = api_url.rstrip("/")
        self.default_to = list(default_to)
        self.timeout_s = timeout_s

    def body(self, n: Notification) -> dict[str, Any]:
        sender: dict[str, str] = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        return {
            "from": sender,
            "to": [{"email": address} for address in (n.to or self.default_to)],
            "subject": n.subject or "(no subject)",
            "text": n.message or n.subject,
            "html": render_email_html(n.subject, n.message, n.priority),
            "category": "ops-agent",
            "headers": {"X-Ops-Notification-Id": n.id, "X-Priority": _X_PRIORITY[n.priority]},
            "custom_variables": {"notification_id": n.notification_id, "priority": n.priority},
        }

    async def send(self, n: Notification) -> DeliveryResult:
        if not (n.to or self.default_to):
            raise NotifyError(self.name, "no recipient: pass `to` or set notify.email_recipients")
        try:
            response = await self.http.post(
                self.api_url + "/api/send",
                json=self.body(n),
                headers={"Authorization": f"Bearer {self._token}", "User-Agent": USER_AGENT},
                timeout=self.timeout_s,
                follow_redirects=False,
            )
        except httpx2.HTTPError as exc:
            raise _network_error(self.name, exc) from None
        status = response.status_code
        if status == 200:
            try:
                ids = [str(i) for i in response.json().get("message_ids", [])]
            except (ValueError, AttributeError):
                ids = []
            return DeliveryResult(channel=self.name, entry_id=n.id, status_code=status, provider_ids=ids)
        detail = _mailtrap_errors(response)
        if status in (401, 403):
            detail = f"the API token was rejected ({detail}); check notify.mailtrap_token"
        elif status == 404:
            detail = f"wrong API URL or inbox ({detail})"
        raise _status_error(self.name, response, detail)


def _mailtrap_errors(response: httpx2.Response) -> str:
    """Every error shape the official client accepts, flattened to one line."""
    if not response.content:
        return "Not Found" if response.status_code == 404 else "Empty response body"
    try:
        body = response.json()
    except ValueError:
        return "Invalid JSON"
    errors = body.get("errors", body.get("error")) if isinstance(body, dict) else None
    if isinstance(errors, list):
        return "; ".join(str(e) for e in errors)[:500]
    if isinstance(errors, dict):
        return "; ".join(
            f"{field}: {', '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}" for field, msgs in errors.items()
        )[:500]
    return str(errors)[:500] if errors else ""


# -- Slack incoming webhook -------------------------------------------------------------------------------

# Slack answers with a plain-text error code; these never succeed on repeat (contract §2).
SLACK_PERMANENT = frozenset({
    "invalid_payload", "no_text", "too_many_attachments", "user_not_found", "no_service_id", "invalid_token",
    "action_prohibited", "posting_to_general_channel_denied", "channel_not_found", "no_service", "no_team",
    "team_disabled", "no_active_hooks", "channel_is_archived",
})


class SlackWebhookChannel:
    """Slack incoming webhook. Its URL is the credential: it appears in no error and no log line."""

    dedupes = False  # incoming webhooks take no idempotency key

    def __init__(self, http: httpx2.AsyncClient, *, webhook_url: str, timeout_s: float = 15.0, name: str = "slack"):
        self.http = http
        self.name = name
        self._url = webhook_url
        self.timeout_s = timeout_s

    @staticmethod
    def body(n: Notification) -> dict[str, Any]:
        return {"text": render_slack_text(n.subject, n.message), "mrkdwn": True, "unfurl_links": False,
                "unfurl_media": False}

    async def send(self, n: Notification) -> DeliveryResult:
        try:
            response = await self.http.post(
                self._url, json=self.body(n), headers={"User-Agent": USER_AGENT}, timeout=self.timeout_s,
                follow_redirects=False,
            )
        except httpx2.HTTPError as exc:
            raise _network_error(self.name, exc) from None
        if response.status_code == 200:
            return DeliveryResult(channel=self.name, entry_id=n.id, status_code=200)
        # The body is an error code; anything else (an HTML error page) is cut to a short shape.
        code = response.text.strip()
        code = code if code.replace("_", "").isalnum() and len(code) <= 64 else ""
        error = _status_error(self.name, response, code)
        if code in SLACK_PERMANENT:
            error.retryable = False
        elif code == "rollup_error":
            error.retryable = True
        if code == "invalid_token" or (error.status_code in (401, 403) and not code):
            error.public_message += " (the webhook was revoked or is wrong; check SLACK_WEBHOOK_URL)"
            error.args = (error.public_message,)
        raise error


# -- SMTP ---------------------------------------------------------------------------------------------------


class SmtpChannel:
    """E-mail over SMTP (aiosmtplib): STARTTLS on a plain port, or TLS from the first byte (port 465)."""

    dedupes = False  # a stable Message-ID lets some mail stores drop a repeat, but nothing guarantees it

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        from_email: str,
        from_name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        tls: bool = False,
        default_to: Iterable[str] = (),
        timeout_s: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        name: str = "smtp",
    ) -> None:
        self.name = name
        self.host, self.port = host, port
        self.from_email, self.from_name = from_email, from_name
        self.username, self._password = username, password
        self.starttls, self.tls = starttls, tls
        self.default_to = list(default_to)
        self.timeout_s = timeout_s
        self.tls_context = tls_context

    def message(self, n: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = email.utils.formataddr((self.from_name or "", self.from_email))
        msg["To"] = ", ".join(n.to or self.default_to)
        msg["Subject"] = n.subject or "(no subject)"
        msg["Date"] = email.utils.formatdate(localtime=False)
        # Stable across retries, so a mail store that dedupes on Message-ID drops a repeat.
        msg["Message-ID"] = f"<{n.id}@ops-agent>"
        msg["X-Priority"] = _X_PRIORITY[n.priority]
        msg["X-Ops-Notification-Id"] = n.id
        msg.set_content(n.message or n.subject)
        msg.add_alternative(render_email_html(n.subject, n.message, n.priority), subtype="html")
        return msg

    async def send(self, n: Notification) -> DeliveryResult:
        if not (n.to or self.default_to):
            raise NotifyError(self.name, "no recipient: pass `to` or set notify.email_recipients")
        msg = self.message(n)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self._password,
                use_tls=self.tls,
                start_tls=self.starttls and not self.tls,  # False: never upgrade; True: required
                timeout=self.timeout_s,
                tls_context=self.tls_context,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise NotifyError(self.name, f"authentication failed ({exc.code}); check notify.smtp_username/"
                              "smtp_password", status_code=exc.code) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            temporary = all(400 <= c < 500 for c in codes)
            raise NotifyError(self.name, f"recipients refused (SMTP {', '.join(map(str, codes))})",
                              status_code=codes[0] if codes else None, retryable=temporary) from None
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx: try again later; 5xx: permanent (RFC 5321 §4.2.1).
            raise NotifyError(self.name, f"server answered SMTP {exc.code}", status_code=exc.code,
                              retryable=400 <= exc.code < 500) from None
        except aiosmtplib.SMTPTimeoutError:
            raise NotifyError(self.name, "timed out", retryable=True) from None
        except aiosmtplib.SMTPException as exc:  # connect errors, disconnects, STARTTLS not offered
            raise NotifyError(self.name, f"SMTP error ({type(exc).__name__})", retryable=True) from None
        except OSError as exc:
            raise NotifyError(self.name, f"network error ({type(exc).__name__})", retryable=True) from None
        return DeliveryResult(channel=self.name, entry_id=n.id, status_code=250, provider_ids=[msg["Message-ID"]])


# -- Standard Webhooks ---------------------------------------------------------------------------------------


class WebhookChannel:
    """A signed outgoing webhook (Standard Webhooks). With `url` None the notification carries the URL.

    Each attempt re-checks the URL, resolves it once and connects to the checked address (Host header and
    SNI keep the name), so a DNS answer that changed to a private address is refused, not followed."""

    dedupes = True  # webhook-id is the same on every attempt; receivers dedupe on it

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        name: str = "webhook",
        url: str | None = None,
        secret: str | None = None,
        allow_hosts: Iterable[str] = (),
        resolver: Resolver | None = None,
        timeout_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.name = name
        self._url = url
        self._secret = secret
        self.allow_hosts = list(allow_hosts)
        self.resolver = resolver
        self.timeout_s = timeout_s
        self.clock = clock

    @staticmethod
    def body(n: Notification) -> bytes:
        data = dict(n.payload) if n.payload is not None else {}
        if n.subject:
            data.setdefault("subject", n.subject)
        if n.message:
            data.setdefault("message", n.message)
        data.setdefault("priority", n.priority)
        data.setdefault("notification_id", n.notification_id)
        event = {
            "type": n.event_type,
            "timestamp": datetime.fromtimestamp(n.created_at, UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        }
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode()

    async def send(self, n: Notification) -> DeliveryResult:
        url = self._url or n.url
        if not url:
            raise NotifyError(self.name, "no webhook URL")
        try:
            pinned = await resolve_webhook_url(url, self.allow_hosts, self.resolver)
        except Exception as exc:  # noqa: BLE001 - WebhookUrlRefused (public text) -> a permanent failure
            raise NotifyError(self.name, getattr(exc, "public_message", "webhook URL refused")) from None
        body = self.body(n)  # the exact bytes signed are the bytes sent
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Host": pinned.host_header(),
            **signature_headers(self._secret, n.id, int(self.clock()), body),
        }
        extensions = {"sni_hostname": pinned.host} if url.lower().startswith("https:") else {}
        try:
            response = await self.http.post(
                pinned.request_url(), content=body, headers=headers, timeout=self.timeout_s,
                follow_redirects=False, extensions=extensions,
            )
        except httpx2.HTTPError as exc:
            raise _network_error(self.name, exc) from None
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult(channel=self.name, entry_id=n.id, status_code=status)
        if 300 <= status < 400:
            raise NotifyError(self.name, f"HTTP {status}: redirect refused (redirects are never followed)",
                              status_code=status)
        detail = "endpoint gone; disable it" if status == 410 else ""
        raise _status_error(self.name, response, detail)
