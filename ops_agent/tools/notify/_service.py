"""NotificationService: the seed's API over a durable outbox, with retries, rate limits and fallback.

Every call stores one outbox entry per channel (stable id = hash of notification id and channel) before
anything is sent, then delivers. `run()` is the background worker; `deliver_due()` is one pass of it (burst
mode, for tests and for callers without a worker). With `wait=True` (the default) a call returns when every
delivery is final or `wait_s` has passed, whichever is first; entries still pending stay in the outbox.

Stages per attempt: rate limit (per channel) -> claim (pending -> sending, committed) -> channel.send ->
delivered | pending later (retryable: Retry-After or exponential backoff with jitter) | failed (permanent,
out of attempts, or the channel kept failing) -> fallback entry for the next channel in `fallback_order`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, get_args

import httpx2

from ops_agent.config import NotifySettings
from ops_agent.errors import ConfigError, ToolFailed, ToolRetry
from ops_agent.redact import Redactor
from ops_agent.tools.notify._channels import (
    Channel,
    MailtrapChannel,
    SlackWebhookChannel,
    SmtpChannel,
    WebhookChannel,
)
from ops_agent.tools.notify._models import (
    FINAL,
    Notification,
    NotificationResult,
    NotifyError,
    OutboxEntry,
    Priority,
    WebhookUrlRefused,
)
from ops_agent.tools.notify._outbox import MemoryOutbox, Outbox
from ops_agent.tools.notify._urls import (
    Resolver,
    check_webhook_url,
    resolve_webhook_url,
)

__all__ = ["NotificationService", "RateLimiter", "backoff_delay", "entry_id"]

log = logging.getLogger("ops_agent.notify")

PRIORITIES: tuple[str, ...] = get_args(Priority)
EMAIL_CHANNELS = ("mailtrap", "smtp")
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$|^[^@\s<>,;\"]+@localhost$")


def entry_id(notification_id: str, channel: str) -> str:
    """Stable per notification x channel: the same call repeated maps to the same entry (and webhook-id)."""
    return "msg_" + hashlib.sha256(f"{notification_id}\0{channel}".encode()).hexdigest()[:32]


def backoff_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: half the ceiling fixed (never a zero wait) plus a random half."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class RateLimiter:
    """Minimum spacing between two sends on one key (a channel), e.g. Slack's ~1 message/s per webhook."""

    def __init__(
        self,
        intervals_s: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.intervals_s = dict(intervals_s)
        self.clock = clock
        self.sleep = sleep
        self._next: dict[str, float] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def interval_s(self, key: str) -> float:
        # "webhook:pager" takes its own limit, else the one for "webhook".
        return self.intervals_s.get(key, self.intervals_s.get(key.split(":", 1)[0], 0.0))

    async def wait(self, key: str) -> None:
        async with self._locks[key]:
            delay = self._next.get(key, 0.0) - self.clock()
            if delay > 0:
                await self.sleep(delay)
            self._next[key] = self.clock() + self.interval_s(key)

    def defer(self, key: str, seconds: float) -> None:
        """Nothing goes out on `key` for `seconds` (a 429's Retry-After covers the whole webhook)."""
        self._next[key] = max(self._next.get(key, 0.0), self.clock() + seconds)


class NotificationService:
    """E-mail (Mailtrap API, SMTP), Slack and signed webhooks, durable and retried.

    `NotificationService(mailtrap_token=..., slack_webhook_url=...)` works as in the seed (memory outbox, own
    HTTP client); the composition root passes `settings`, `http`, `outbox=SqliteOutbox(db)` and `redactor`.
    """

    def __init__(
        self,
        mailtrap_token: str | None = None,
        slack_webhook_url: str | None = None,
        *,
        settings: NotifySettings | None = None,
        http: httpx2.AsyncClient | None = None,
        outbox: Outbox | None = None,
        redactor: Redactor | None = None,
        channels: Mapping[str, Channel] | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings = settings or NotifySettings()
        self._owns_http = http is None
        self.http = http or httpx2.AsyncClient(follow_redirects=False, timeout=settings.timeout_s)
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        mailtrap_token = mailtrap_token or _secret(settings.mailtrap_token)
        slack_webhook_url = slack_webhook_url or _secret(settings.slack_webhook_url)
        secrets = [s for s in (mailtrap_token, slack_webhook_url, _secret(settings.smtp_password),
                               _secret(settings.webhook_secret)) if s]
        for hook in settings.webhooks.values():
            secrets += [hook.url.get_secret_value(), _secret(hook.secret) or ""]
        self.redactor = redactor or Redactor(secrets)
        self.resolver = resolver
        self.clock = clock
        self.rng = rng or random.Random()
        self.limiter = limiter or RateLimiter(settings.rate_limit_s)
        self.channels: dict[str, Channel] = self._default_channels(mailtrap_token, slack_webhook_url)
        self.channels.update(channels or {})
        self._failures: defaultdict[str, int] = defaultdict(int)  # consecutive failures per channel
        self._recovered = False
        self._running = False
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stopped.set()

    def _default_channels(self, mailtrap_token: str | None, slack_webhook_url: str | None) -> dict[str, Channel]:
        s = self.settings
        channels: dict[str, Channel] = {}
        if mailtrap_token:
            channels["mailtrap"] = MailtrapChannel(
                self.http, token=mailtrap_token, from_email=s.from_email, from_name=s.from_name,
                api_url=s.mailtrap_api_url, default_to=s.email_recipients, timeout_s=s.timeout_s,
            )
        if s.smtp_host:
            channels["smtp"] = SmtpChannel(
                host=s.smtp_host, port=s.smtp_port, from_email=s.from_email, from_name=s.from_name,
                username=s.smtp_username, password=_secret(s.smtp_password), starttls=s.smtp_starttls, tls=s.smtp_tls,
                default_to=s.email_recipients, timeout_s=s.timeout_s,
            )
        if slack_webhook_url:
            channels["slack"] = SlackWebhookChannel(self.http, webhook_url=slack_webhook_url, timeout_s=s.timeout_s)
        common = {"allow_hosts": s.webhook_allow_hosts, "resolver": self.resolver, "timeout_s": s.timeout_s, "clock": self.clock}
        channels["webhook"] = WebhookChannel(self.http, secret=_secret(s.webhook_secret), **common)
        for name, hook in s.webhooks.items():
            url = hook.url.get_secret_value()
            try:
                check_webhook_url(url, s.webhook_allow_hosts)
            except WebhookUrlRefused as exc:
                raise ConfigError(f"notify.webhooks.{name}.url: {exc.public_message.removeprefix('url: ')}") from None
            channels[f"webhook:{name}"] = WebhookChannel(
                self.http, name=f"webhook:{name}", url=url, secret=_secret(hook.secret), **common
            )
        return channels

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the seed's API -------------------------------------------------------------------------------------

    async def send_email_mailtrap(
        self, to: str | Sequence[str] | None = None, subject: str = "", body: str = "", **options: Any
    ) -> NotificationResult:
        """E-mail through the Mailtrap send API. `options` as for send_notification."""
        return await self.send_notification("mailtrap", body, subject=subject, to=to, **options)

    async def send_email_smtp(
        self, to: str | Sequence[str] | None = None, subject: str = "", body: str = "", **options: Any
    ) -> NotificationResult:
        """E-mail through the configured SMTP server."""
        return await self.send_notification("smtp", body, subject=subject, to=to, **options)

    async def send_email(
        self, to: str | Sequence[str] | None = None, subject: str = "", body: str = "", **options: Any
    ) -> NotificationResult:
        """E-mail through Mailtrap when a token is configured, else SMTP."""
        return await self.send_notification("email", body, subject=subject, to=to, **options)

    async def send_slack_message(
        self, message: str, channel: str | None = None, **options: Any
    ) -> NotificationResult:
        """A Slack message through the incoming webhook.

        `channel` is accepted for the seed's signature only: an incoming webhook posts to the channel chosen
        when it was created, and Slack ignores any override."""
        return await self.send_notification("slack", message, **options)

    async def send_webhook(
        self,
        url: str | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        webhook: str | None = None,
        event_type: str = "notification",
        **options: Any,
    ) -> NotificationResult:
        """A signed webhook: to `url` (checked: https, public address, unless allow-listed) or to the
        configured webhook named `webhook`. The body is `{"type", "timestamp", "data": payload}`."""
        if (url is None) == (webhook is None):
            raise ToolRetry("url: give exactly one of url and webhook")
        channel = f"webhook:{webhook}" if webhook is not None else "webhook"
        return await self.send_notification(channel, url=url, payload=payload, event_type=event_type, **options)

    async def send_notification(
        self,
        channel: str | Sequence[str] | None = None,
        message: str = "",
        *,
        channels: Sequence[str] | None = None,
        subject: str = "",
        priority: str = "medium",
        to: str | Sequence[str] | None = None,
        payload: Mapping[str, Any] | None = None,
        url: str | None = None,
        event_type: str = "notification",
        notification_id: str | None = None,
        wait: bool = True,
        wait_s: float = 30.0,
    ) -> NotificationResult:
        """Send one notification to one or several channels: email (Mailtrap, else SMTP), mailtrap, smtp,
        slack, webhook (ad-hoc `url`), webhook:<name>.

        `notification_id` is an idempotency key: a second call with the same one sends nothing new and
        returns the first call's deliveries. Text is scrubbed of secrets before it is stored or sent."""
        names = self._channel_names(channel, channels)
        if priority not in PRIORITIES:
            raise ToolRetry(f"priority: must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        if not (message or subject or payload is not None):
            raise ToolRetry("message: nothing to send (message, subject and payload are empty)")
        # Defaults are resolved now, so the stored notification needs nothing from the config that sends it.
        recipients = _recipients(to) or list(self.settings.email_recipients)
        if any(n in EMAIL_CHANNELS for n in names) and not recipients:
            raise ToolRetry("to: name at least one recipient (or set notify.email_recipients)")
        if "webhook" in names:
            if not url:
                raise ToolRetry("url: the webhook channel needs a url (or use webhook:<name>)")
            await resolve_webhook_url(url, self.settings.webhook_allow_hosts, self.resolver)
        if not isinstance(event_type, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", event_type):
            raise ToolRetry("event_type: letters, digits and _.:- only, at most 64")
        if notification_id is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", notification_id):
            raise ToolRetry("notification_id: letters, digits and _.:- only, at most 128")
        nid = notification_id or f"ntf_{uuid.uuid4().hex}"
        now = self.clock()
        base = {
            "notification_id": nid,
            # A header value may not span lines (and a CR/LF in it would inject headers).
            "subject": " ".join(self.redactor.text(subject).split()),
            "message": self.redactor.text(message),
            "priority": priority,
            "to": recipients,
            "payload": self.redactor.value(dict(payload)) if payload is not None else None,
            "event_type": event_type,
            "url": url if "webhook" in names else None,
            "created_at": now,
        }
        entries = [
            OutboxEntry(id=entry_id(nid, name), notification=Notification(id=entry_id(nid, name), channel=name, **base),
                        next_attempt_at=now, updated_at=now)
            for name in names
        ]
        added = await self.outbox.add(entries)
        log.info("notify: %s queued for %s", nid, ", ".join(names) if added else "(already queued)")
        self._wake.set()
        if wait:
            await self._wait_final([e.id for e in entries], wait_s)
        return await self.status(nid)

    async def status(self, notification_id: str) -> NotificationResult:
        """Every delivery of a notification, fallbacks included, as the outbox has them now."""
        entries = await self.outbox.for_notification(notification_id)
        by_id = {e.id: e for e in entries}

        def delivered(entry: OutboxEntry) -> bool:
            seen = set()
            while entry.status == "failed" and entry.fallback_entry in by_id and entry.id not in seen:
                seen.add(entry.id)
                entry = by_id[entry.fallback_entry]  # type: ignore[index]
            return entry.status == "delivered"

        roots = [e for e in entries if e.fallback_of is None]
        return NotificationResult(
            notification_id=notification_id,
            success=bool(roots) and all(delivered(e) for e in roots),
            deliveries=[e.result() for e in entries],
        )

    # -- delivery ---------------------------------------------------------------------------------------------

    async def recover(self) -> tuple[int, int]:
        """Settle entries a stopped process left mid-send (see the outbox's docstring); once per service."""
        if self._recovered:
            return 0, 0
        self._recovered = True

        def resend(channel: str) -> bool:
            found = self.channels.get(channel)
            return bool(found is not None and found.dedupes) or self.settings.in_doubt == "resend"

        resent, failed = await self.outbox.recover(self.clock(), resend)
        if resent or failed:
            log.warning("notify: %d deliveries were interrupted by a stop: %d resent, %d not", resent + failed,
                        resent, failed)
        return resent, failed

    async def deliver_due(self, ids: Sequence[str] | None = None, *, limit: int = 500) -> int:
        """One pass: attempt every due entry (of `ids`, if given), channels in parallel, each channel in order
        and within its rate limit. Returns the number of entries found due."""
        await self.recover()
        due = await self.outbox.due(self.clock(), limit=limit, ids=ids)
        lanes: dict[str, list[OutboxEntry]] = defaultdict(list)
        for entry in due:
            lanes[entry.channel].append(entry)
        await asyncio.gather(*(self._lane(key, group) for key, group in lanes.items()))
        return len(due)

    async def run(self, *, drain_timeout_s: float = 10.0) -> None:
        """The delivery worker, until `stop()` (graceful) or cancellation (like a crash: attempts in flight
        stay in doubt, see the outbox). One worker per database (see `recover`)."""
        await self.recover()
        self._running, self._stopping = True, False
        self._stopped.clear()
        try:
            while not self._stopping:
                try:
                    await self._start_lanes()
                    next_at = await self.outbox.next_due_at()
                except Exception as exc:  # noqa: BLE001 - a worker that dies loses nothing but stops delivering
                    log.error("notify: delivery pass failed (%s); retrying", type(exc).__name__)
                    next_at = None
                idle = self.settings.poll_interval_s
                delay = idle if next_at is None else min(idle, max(0.0, next_at - self.clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))
                self._wake.clear()
        finally:
            self._running = False
            lanes = [t for t in self._lanes.values() if not t.done()]
            if lanes and self._stopping:
                # Graceful: attempts in flight finish and are recorded, so a restart has nothing in doubt.
                await asyncio.wait(lanes, timeout=drain_timeout_s)
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            self._stopped.set()

    async def stop(self) -> None:
        """Stop `run()` gracefully: no new attempt starts, the ones in flight finish; returns when it has."""
        self._stopping = True
        self._wake.set()
        await self._stopped.wait()

    async def _start_lanes(self) -> None:
        due = await self.outbox.due(self.clock(), limit=500)
        lanes: dict[str, list[OutboxEntry]] = defaultdict(list)
        for entry in due:
            lanes[entry.channel].append(entry)
        for key, group in lanes.items():
            running = self._lanes.get(key)
            if running is None or running.done():
                # A busy channel keeps its lane; the entries wait for the next pass, the other channels don't.
                task = asyncio.create_task(self._lane(key, group), name=f"notify:{key}")
                task.add_done_callback(lambda _t: self._wake.set())
                self._lanes[key] = task

    async def _lane(self, key: str, group: list[OutboxEntry]) -> None:
        for entry in group:
            if self._stopping:
                return
            await self.limiter.wait(key)
            if self._stopping:
                return
            await self._attempt(entry)

    async def _attempt(self, entry: OutboxEntry) -> None:
        claimed = await self.outbox.claim(entry.id, self.clock())
        if claimed is None:
            return  # delivered, rescheduled or claimed by another pass meanwhile
        channel = self.channels.get(claimed.channel)
        try:
            if channel is None:
                raise NotifyError(claimed.channel, "channel is not configured")
            result = await channel.send(claimed.notification)
        except NotifyError as exc:
            await self._failed_attempt(claimed, exc)
        except Exception as exc:  # noqa: BLE001 - a bug in a channel; its text may hold a secret, so only the type
            log.error("notify: %s on %s raised %s", claimed.id, claimed.channel, type(exc).__name__)
            await self._failed_attempt(
                claimed, NotifyError(claimed.channel, f"unexpected error ({type(exc).__name__})", retryable=True)
            )
        else:
            await self.outbox.mark_delivered(claimed.id, result, self.clock())
            self._failures[claimed.channel] = 0
            log.info("notify: %s delivered on %s (attempt %d)", claimed.id, claimed.channel, claimed.attempts)
        finally:
            self._progress.set()

    async def _failed_attempt(self, entry: OutboxEntry, exc: NotifyError) -> None:
        s = self.settings
        channel = entry.channel
        self._failures[channel] += 1
        error = self.redactor.text(exc.public_message)
        now = self.clock()
        if exc.retry_after_s is not None:
            self.limiter.defer(channel, min(exc.retry_after_s, s.max_retry_after_s))
        failing = self._failures[channel] >= s.fallback_after_failures
        fallback_channel = await self._fallback_channel(entry)
        if exc.retryable and entry.attempts < s.max_attempts and not (failing and fallback_channel):
            if exc.retry_after_s is not None:
                delay = min(exc.retry_after_s, s.max_retry_after_s)
            else:
                delay = backoff_delay(entry.attempts, base_s=s.backoff_s, max_s=s.max_backoff_s, rng=self.rng)
            await self.outbox.reschedule(
                entry.id, error=error, status_code=exc.status_code, next_attempt_at=now + delay, now=now
            )
            log.warning("notify: %s attempt %d failed, retry in %.1fs: %s", entry.id, entry.attempts, delay, error)
            return
        why = ("permanent error" if not exc.retryable else
               "out of attempts" if entry.attempts >= s.max_attempts else "channel keeps failing")
        fallback = None
        if fallback_channel is not None:
            fallback = self._fallback_entry(entry, fallback_channel, f"{why}: {error}", now)
        await self.outbox.mark_failed(entry.id, error=f"{why}: {error}", status_code=exc.status_code, now=now,
                                      fallback=fallback)
        log.warning("notify: %s failed on %s (%s): %s%s", entry.id, channel, why, error,
                    f"; falling back to {fallback_channel}" if fallback_channel else "")

    async def _fallback_channel(self, entry: OutboxEntry) -> str | None:
        order = [self._resolve_alias(name) for name in self.settings.fallback_order]
        order = [name for name in dict.fromkeys(order) if name in self.channels and name != "webhook"]
        if not order:
            return None
        used = {e.channel for e in await self.outbox.for_notification(entry.notification.notification_id)}
        at = order.index(entry.channel) if entry.channel in order else -1
        for name in order[at + 1 :] + order[: max(at, 0)]:
            if name not in used:
                if name in EMAIL_CHANNELS and not (entry.notification.to or self.settings.email_recipients):
                    continue
                return name
        return None

    def _fallback_entry(self, entry: OutboxEntry, channel: str, reason: str, now: float) -> OutboxEntry:
        n = entry.notification
        new_id = entry_id(n.notification_id, channel)
        note = f"(sent on {channel} because {entry.channel} failed: {reason})"
        notification = n.model_copy(update={
            "id": new_id, "channel": channel, "fallback_from": entry.channel,
            "to": n.to or list(self.settings.email_recipients),
            "message": f"{n.message}\n\n{note}" if n.message else note,
        })
        return OutboxEntry(id=new_id, notification=notification, next_attempt_at=now, updated_at=now,
                           fallback_of=entry.id)

    async def _wait_final(self, ids: list[str], wait_s: float) -> None:
        deadline = self.clock() + wait_s
        watched = list(ids)
        while True:
            if not self._running:
                await self.deliver_due(ids=watched)
            entries = await self.outbox.get(watched)
            for entry in entries:  # follow fallbacks: the caller waits for where the message went
                if entry.fallback_entry and entry.fallback_entry not in watched:
                    watched.append(entry.fallback_entry)
            entries = await self.outbox.get(watched)
            pending = [e for e in entries if e.status not in FINAL]
            remaining = deadline - self.clock()
            if not pending or remaining <= 0:
                return
            if self._running:
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), timeout=min(remaining, 0.5))
                continue
            next_at = min((e.next_attempt_at for e in pending if e.status == "pending"), default=self.clock())
            if next_at > deadline:
                return  # the next attempt is after the caller's deadline: report it as pending
            await asyncio.sleep(max(0.0, next_at - self.clock()))

    def _channel_names(self, channel: str | Sequence[str] | None, channels: Sequence[str] | None) -> list[str]:
        requested: list[str] = []
        for item in (channel, channels):
            if isinstance(item, str):
                requested.append(item)
            elif item is not None:
                requested.extend(item)
        if not requested:
            raise ToolRetry("channel: name at least one channel (email, mailtrap, smtp, slack, webhook, webhook:<name>)")
        names = []
        for name in requested:
            resolved = self._resolve_alias(name)
            if resolved not in self.channels:
                raise self._unavailable(name)
            names.append(resolved)
        return list(dict.fromkeys(names))

    def _resolve_alias(self, name: str) -> str:
        if name == "email":
            return next((c for c in EMAIL_CHANNELS if c in self.channels), "mailtrap")
        return name

    def _unavailable(self, name: str) -> Exception:
        hints = {
            "email": "set Mailtrap_API_TOKEN (notify.mailtrap_token) or notify.smtp_host",
            "mailtrap": "set Mailtrap_API_TOKEN or notify.mailtrap_token",
            "smtp": "set notify.smtp_host",
            "slack": "set SLACK_WEBHOOK_URL or notify.slack_webhook_url",
        }
        if name in hints:
            return ToolFailed(f"{name} is not configured: {hints[name]}")
        if name.startswith("webhook:"):
            return ToolRetry(f"channel: no webhook named {name[8:]!r} in notify.webhooks")
        known = ", ".join(sorted({"email", *self.channels}))
        return ToolRetry(f"channel: unknown channel {name!r}; configured: {known}")


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _recipients(to: str | Sequence[str] | None) -> list[str]:
    if to is None:
        return []
    items = [to] if isinstance(to, str) else list(to)
    out = []
    for item in items:
        for address in str(item).replace(";", ",").split(","):
            address = address.strip()
            if not address:
                continue
            if not _EMAIL.match(address):
                raise ToolRetry(f"to: {address[:100]!r} is not an e-mail address")
            out.append(address)
    return list(dict.fromkeys(out))
