"""NotificationService against the real sinks (sandbox/notify): Slack, Mailtrap, a Standard Webhooks
receiver that verifies signatures, and an aiosmtpd SMTP server, all on loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from ops_agent.config import NotifySettings, NotifyWebhook
from ops_agent.errors import ConfigError, ToolFailed, ToolRetry
from ops_agent.redact import Redactor
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.notify import (
    NotificationService,
    SmtpChannel,
    SqliteOutbox,
    WebhookUrlRefused,
)
from sandbox.notify import NotifySinks, SinksConfig

FAST = {"backoff_s": 0.05, "max_backoff_s": 0.2, "rate_limit_s": {}, "timeout_s": 3.0, "poll_interval_s": 0.05}


@pytest.fixture(scope="module")
def sinks() -> Iterator[NotifySinks]:
    with NotifySinks(SinksConfig(slack_rate_per_s=None)) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(sinks: NotifySinks) -> None:
    sinks.clear(reset_dedup=True)
    sinks.latency_s = 0.0
    for hook in sinks.config.slack_webhooks:
        sinks.set_slack_state(hook.name, "active")
    while any(sinks.state.inbox.take_fault(c) for c in ("slack", "mailtrap", "webhook", "smtp")):
        pass


def notify_settings(sinks: NotifySinks, **overrides) -> NotifySettings:
    values = dict(
        mailtrap_token=sinks.mailtrap_token,
        mailtrap_api_url=sinks.mailtrap_url,
        slack_webhook_url=sinks.slack_url,
        from_email="ops@example.com",
        email_recipients=["oncall@example.com"],
        smtp_host=sinks.smtp_host,
        smtp_port=sinks.smtp_port,
        smtp_starttls=False,
        webhook_secret=sinks.webhook_secret,
        webhook_allow_hosts=["127.0.0.1"],
        **FAST,
    )
    values.update(overrides)
    return NotifySettings.model_validate(values)


@contextlib.asynccontextmanager
async def service(sinks: NotifySinks, outbox=None, **overrides) -> AsyncIterator[NotificationService]:
    async with httpx2.AsyncClient() as http:
        yield NotificationService(settings=notify_settings(sinks, **overrides), http=http, outbox=outbox)


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "ops-agent.db")
    await database.open()
    yield database
    await database.close()


# -- each channel delivers ----------------------------------------------------------------------------------------


async def test_all_channels_at_once_with_escaping_and_signatures(sinks):
    hostile = "disk full <!channel> <@U123> <http://evil.example|login> & <b>bold</b>"
    async with service(sinks) as svc:
        result = await svc.send_notification(
            ["email", "smtp", "slack", "webhook"], hostile, subject="api <down>", priority="critical",
            to="admin@example.com", url=sinks.webhook_url, payload={"service": "api"},
        )
    assert result.success, result
    assert {d.channel: d.status for d in result.deliveries} == dict.fromkeys(
        ["mailtrap", "smtp", "slack", "webhook"], "delivered")
    [slack] = sinks.messages("slack")
    assert "<" not in slack.payload["text"].replace("&lt;", "").replace("&gt;", "")
    assert "&lt;!channel&gt;" in slack.payload["text"] and "&lt;http://evil.example|login&gt;" in slack.payload["text"]
    [mail] = sinks.messages("mailtrap")
    assert mail.recipients == ["admin@example.com"]
    assert mail.payload["text"].startswith(hostile)
    assert "<b>bold" not in mail.payload["html"] and "&lt;b&gt;bold&lt;/b&gt;" in mail.payload["html"]
    assert result.deliveries[0].provider_ids  # Mailtrap's message_ids are recorded
    [smtp] = sinks.messages("smtp")
    assert smtp.recipients == ["admin@example.com"] and "&lt;!channel&gt;" in smtp.payload["html"]
    [hook] = sinks.messages("webhook")
    assert hook.verified is True
    assert hook.payload["data"]["service"] == "api" and hook.payload["data"]["priority"] == "critical"
    assert hook.headers["webhook-id"] == next(d.entry_id for d in result.deliveries if d.channel == "webhook")


async def test_seed_api_shapes(sinks):
    async with httpx2.AsyncClient() as http:
        svc = NotificationService(
            mailtrap_token=sinks.mailtrap_token, slack_webhook_url=sinks.slack_url,
            settings=NotifySettings(mailtrap_api_url=sinks.mailtrap_url, from_email="ops@example.com",
                                    webhook_allow_hosts=["127.0.0.1"], webhook_secret=sinks.webhook_secret,
                                    rate_limit_s={}),
            http=http,
        )
        r1 = await svc.send_email_mailtrap(to="admin@example.com", subject="Critical Alert",
                                           body="CPU usage exceeded 90%")
        r2 = await svc.send_slack_message(message="🔴 [CRITICAL] CPU usage exceeded 90%", channel="#ops-alerts")
        r3 = await svc.send_webhook(url=sinks.webhook_url, payload={"severity": "critical", "message": "CPU"})
        r4 = await svc.send_notification(channel="email", message="Alert message", to="admin@example.com",
                                         subject="Alert Subject")
    assert all(r.success for r in (r1, r2, r3, r4))
    assert len(sinks.messages("mailtrap")) == 2 and len(sinks.messages("slack")) == 1
    assert sinks.messages("webhook")[0].verified


async def test_real_smtp_with_starttls_and_auth():
    config = SinksConfig(smtp_tls="starttls", smtp_auth_required=True, slack_rate_per_s=None)
    async with NotifySinks(config) as tls_sinks:
        def channel(password: str) -> SmtpChannel:
            return SmtpChannel(
                host="localhost", port=tls_sinks.smtp_port, from_email="ops@example.com",
                username=tls_sinks.smtp_username, password=password, starttls=True,
                tls_context=tls_sinks.smtp_client_tls_context(), timeout_s=5,
            )

        settings = NotifySettings(email_recipients=["oncall@example.com"], rate_limit_s={})
        good = NotificationService(settings=settings, channels={"smtp": channel(tls_sinks.smtp_password)})
        bad = NotificationService(settings=settings, channels={"smtp": channel("wrong-password-123")})
        async with good, bad:
            ok = await good.send_email_smtp(subject="over TLS", body="hello")
            refused = await bad.send_email_smtp(subject="wrong password", body="hello")
        [mail] = tls_sinks.messages("smtp")
        assert ok.success and mail.payload["tls"] is True and mail.verified is True
        [delivery] = refused.deliveries
        assert (delivery.status, delivery.attempts) == ("failed", 1)  # 535 is permanent
        assert "authentication failed" in delivery.error and "wrong-password-123" not in delivery.error


async def test_smtp_reply_codes(sinks):
    async with service(sinks) as svc:
        sinks.fail_next("smtp", 451)  # temporary: retried
        retried = await svc.send_email_smtp(subject="s", body="b")
        sinks.fail_next("smtp", 550)  # permanent
        refused = await svc.send_email_smtp(subject="s", body="b")
    assert retried.success and retried.deliveries[0].attempts == 2
    assert refused.deliveries[0].status == "failed" and refused.deliveries[0].attempts == 1


# -- error classes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body"), [(401, None), (403, None), (400, None), (404, ""), (422, None)])
async def test_mailtrap_permanent_errors_are_not_retried(sinks, status, body):
    async with service(sinks) as svc:
        sinks.fail_next("mailtrap", status, body)
        result = await svc.send_email_mailtrap(to="a@example.com", subject="s", body="b")
    [d] = result.deliveries
    assert (d.status, d.attempts, d.status_code) == ("failed", 1, status)
    assert d.error.startswith("permanent error")
    assert len(sinks.attempts("mailtrap")) == 1


async def test_wrong_mailtrap_token_says_so_without_the_token(sinks):
    async with service(sinks, mailtrap_token="mt-wrong-token-0123456789") as svc:
        result = await svc.send_email_mailtrap(to="a@example.com", subject="s", body="b")
    [d] = result.deliveries
    assert d.status_code == 401 and "API token was rejected" in d.error and "mt-wrong" not in d.error


@pytest.mark.parametrize(("state", "code", "status"), [
    ("archived", "channel_is_archived", 410), ("revoked", "invalid_token", 403), ("disabled", "no_service", 404),
])
async def test_slack_permanent_errors_key_on_the_body(sinks, state, code, status):
    sinks.set_slack_state(sinks.config.slack_webhooks[0].name, state)
    async with service(sinks) as svc:
        result = await svc.send_slack_message("hello")
    [d] = result.deliveries
    assert (d.status, d.attempts, d.status_code) == ("failed", 1, status)
    assert code in d.error
    assert sinks.slack_url not in d.error and "sandboxWebhookSecret" not in d.error


async def test_slack_429_honours_retry_after(sinks):
    async with service(sinks) as svc:
        sinks.fail_next("slack", 429, retry_after=1)
        result = await svc.send_slack_message("rate limited once")
    assert result.success and result.deliveries[0].attempts == 2
    first, second = sinks.attempts("slack")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95  # Retry-After: 1, not our 50 ms backoff


@pytest.mark.parametrize("channel", ["slack", "mailtrap", "webhook"])
async def test_5xx_is_retried_with_backoff(sinks, channel):
    async with service(sinks) as svc:
        sinks.fail_next(channel, 503, count=2)
        result = await svc.send_notification(channel, "flaky", to="a@example.com", url=sinks.webhook_url)
    [d] = result.deliveries
    assert d.status == "delivered" and d.attempts == 3
    statuses = [a.status for a in sinks.attempts(channel)]
    assert statuses[:2] == [503, 503] and statuses[2] in (200, 204)


async def test_out_of_attempts_marks_failed(sinks):
    async with service(sinks, max_attempts=3) as svc:
        sinks.fail_next("slack", 500, count=5)
        result = await svc.send_slack_message("never")
    [d] = result.deliveries
    assert (d.status, d.attempts) == ("failed", 3) and d.error.startswith("out of attempts")


async def test_timeouts_and_refused_connections_are_retryable(sinks):
    async with service(sinks, timeout_s=0.2, max_attempts=2) as svc:
        sinks.latency_s = 0.5
        timed_out = await svc.send_slack_message("slow")
    assert timed_out.deliveries[0].status == "failed" and "timed out" in timed_out.deliveries[0].error
    assert timed_out.deliveries[0].attempts == 2
    with contextlib.closing(__import__("socket").socket()) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with service(sinks, mailtrap_api_url=f"http://127.0.0.1:{port}", max_attempts=2) as svc:
        refused = await svc.send_email_mailtrap(to="a@example.com", subject="s", body="b")
    assert refused.deliveries[0].attempts == 2 and "network error" in refused.deliveries[0].error


async def test_webhook_redirects_are_not_followed_and_410_is_final(sinks):
    async with service(sinks) as svc:
        sinks.fail_next("webhook", 302)
        redirected = await svc.send_webhook(url=sinks.webhook_url, payload={"a": 1})
        sinks.fail_next("webhook", 410)
        gone = await svc.send_webhook(url=sinks.webhook_url, payload={"a": 2})
    assert redirected.deliveries[0].status == "failed" and "redirect refused" in redirected.deliveries[0].error
    assert gone.deliveries[0].status == "failed" and gone.deliveries[0].attempts == 1
    assert len(sinks.attempts("webhook")) == 2


# -- rate limits and fallback ------------------------------------------------------------------------------------------


async def test_slack_rate_limit_spaces_messages(sinks):
    async with service(sinks, rate_limit_s={"slack": 0.3}) as svc:
        await asyncio.gather(*(svc.send_slack_message(f"m{i}", wait=False) for i in range(4)))
        await svc.deliver_due()
    times = [m.received_at for m in sinks.messages("slack")]
    assert len(times) == 4
    assert all(b - a >= 0.28 for a, b in itertools.pairwise(times))


async def test_permanent_failure_falls_back_to_the_next_channel(sinks, db):
    outbox = SqliteOutbox(db)
    await outbox.migrate()
    sinks.set_slack_state(sinks.config.slack_webhooks[0].name, "archived")
    async with service(sinks, outbox, fallback_order=["slack", "email", "webhook"]) as svc:
        result = await svc.send_slack_message("db down", subject="P1")
    assert result.success
    slack, mail = result.deliveries
    assert (slack.channel, slack.status, slack.fallback_entry) == ("slack", "failed", mail.entry_id)
    assert (mail.channel, mail.status, mail.fallback_of) == ("mailtrap", "delivered", slack.entry_id)
    [sent] = sinks.messages("mailtrap")
    assert sent.recipients == ["oncall@example.com"] and "because slack failed" in sent.payload["text"]


async def test_a_channel_that_keeps_failing_falls_back(sinks):
    async with service(sinks, fallback_order=["webhook:ops", "slack"], fallback_after_failures=2,
                       webhooks={"ops": NotifyWebhook(url=sinks.webhook_url, secret=sinks.webhook_secret)}) as svc:
        sinks.fail_next("webhook", 503, count=10)
        result = await svc.send_webhook(webhook="ops", payload={"x": 1})
    hook, slack = result.deliveries
    assert (hook.status, hook.attempts) == ("failed", 2) and "channel keeps failing" in hook.error
    assert slack.status == "delivered" and result.success


# -- durability -----------------------------------------------------------------------------------------------------


async def test_restart_mid_delivery_loses_nothing_and_sends_nothing_twice(sinks, db):
    outbox = SqliteOutbox(db)
    await outbox.migrate()
    async with service(sinks, outbox, rate_limit_s={"slack": 0.25, "webhook": 0.25}) as first:
        for i in range(6):
            await first.send_notification(["slack", "webhook"], f"event {i}", url=sinks.webhook_url, wait=False)
        worker = asyncio.create_task(first.run())
        await sinks.wait_for(3, "slack", timeout_s=5)
        await first.stop()  # the process is stopped mid-delivery (a deploy, SIGTERM)
        await worker
    delivered_before = len(sinks.messages())
    assert delivered_before < 12
    assert await outbox.list(status="sending") == []  # nothing in doubt after a graceful stop
    async with service(sinks, SqliteOutbox(db)) as second:  # a new process over the same database
        while await second.deliver_due():
            pass
    slack = [m.payload["text"] for m in sinks.messages("slack")]
    assert sorted(slack) == sorted(f"event {i}" for i in range(6))  # each exactly once
    hooks = sinks.messages("webhook", include_duplicates=False)
    assert sorted(m.payload["data"]["message"] for m in hooks) == sorted(f"event {i}" for i in range(6))
    assert all(e.status == "delivered" for e in await outbox.list(limit=100))


async def test_a_hard_crash_loses_nothing_and_duplicates_only_what_was_in_flight(sinks, db):
    outbox = SqliteOutbox(db)
    await outbox.migrate()
    sinks.latency_s = 0.05  # so that the crash is likely to land mid-request
    async with service(sinks, outbox, rate_limit_s={"slack": 0.1, "webhook": 0.1}) as first:
        for i in range(6):
            await first.send_notification(["slack", "webhook"], f"event {i}", url=sinks.webhook_url, wait=False)
        worker = asyncio.create_task(first.run())
        await sinks.wait_for(2, "slack", timeout_s=5)
        worker.cancel()  # no drain: whatever is in flight is in doubt
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    in_doubt = {e.channel for e in await outbox.list(status="sending")}
    async with service(sinks, SqliteOutbox(db)) as second:
        while await second.deliver_due():
            pass
    slack = [m.payload["text"] for m in sinks.messages("slack")]
    assert set(slack) == {f"event {i}" for i in range(6)}  # nothing lost
    assert len(slack) <= 6 + ("slack" in in_doubt)  # a repeat only for the one in flight
    hooks = sinks.messages("webhook", include_duplicates=False)  # the receiver drops repeats by webhook-id
    assert sorted(m.payload["data"]["message"] for m in hooks) == sorted(f"event {i}" for i in range(6))


async def test_in_doubt_deliveries_after_a_crash(sinks, db):
    """A crash after the claim was committed: the webhook is resent under the same webhook-id (the receiver
    drops a copy it already has); Slack is resent with in_doubt=resend and dropped with in_doubt=drop."""
    outbox = SqliteOutbox(db)
    await outbox.migrate()
    async with service(sinks, outbox) as first:
        kept = await first.send_notification(["slack", "webhook"], "in doubt", url=sinks.webhook_url, wait=False)
        dropped = await first.send_slack_message("dropped", wait=False)
        for delivery in kept.deliveries + dropped.deliveries:
            await outbox.claim(delivery.entry_id, first.clock())  # ... and the process died while sending
        # the webhook had in fact arrived before the crash
        await first.channels["webhook"].send((await outbox.get([kept.deliveries[1].entry_id]))[0].notification)
    async with service(sinks, outbox, in_doubt="drop") as second:
        await second.deliver_due()
        kept_now, dropped_now = await second.status(kept.notification_id), await second.status(dropped.notification_id)
    assert {d.channel: d.status for d in kept_now.deliveries} == {"slack": "failed", "webhook": "delivered"}
    assert dropped_now.deliveries[0].status == "failed" and "interrupted" in dropped_now.deliveries[0].error
    assert sinks.messages("slack") == []
    assert len(sinks.messages("webhook")) == 2 and len(sinks.messages("webhook", include_duplicates=False)) == 1


async def test_in_doubt_resend_is_the_default(sinks, db):
    outbox = SqliteOutbox(db)
    await outbox.migrate()
    async with service(sinks, outbox) as first:
        pending = await first.send_slack_message("must not be lost", wait=False)
        await outbox.claim(pending.deliveries[0].entry_id, first.clock())
    async with service(sinks, outbox) as second:
        await second.deliver_due()
    assert [m.payload["text"] for m in sinks.messages("slack")] == ["must not be lost"]


async def test_same_notification_id_is_sent_once(sinks):
    async with service(sinks) as svc:
        first = await svc.send_slack_message("once", notification_id="alert-42-firing")
        again = await svc.send_slack_message("once", notification_id="alert-42-firing")
    assert first.success and again.success and len(sinks.messages("slack")) == 1


async def test_worker_delivers_and_waiters_return(sinks):
    async with service(sinks) as svc:
        worker = asyncio.create_task(svc.run())
        try:
            sinks.fail_next("slack", 500)
            result = await asyncio.wait_for(svc.send_slack_message("via worker"), 5)
        finally:
            await svc.stop()
            await worker
    assert result.success and result.deliveries[0].attempts == 2


async def test_wait_false_and_a_long_retry_after_leave_entries_pending(sinks):
    async with service(sinks) as svc:
        sinks.fail_next("slack", 429, retry_after=30)
        result = await svc.send_slack_message("later", wait_s=1)
    [d] = result.deliveries
    assert d.status == "pending" and d.attempts == 1 and d.next_attempt_at is not None and not result.success


# -- URL safety at the service -----------------------------------------------------------------------------------------


async def test_unsafe_webhook_urls_are_refused_before_anything_is_stored(sinks):
    async with service(sinks, webhook_allow_hosts=[]) as svc:
        for url in ["http://169.254.169.254/latest/meta-data/", "https://[::ffff:127.0.0.1]/x",
                    "https://[64:ff9b::a9fe:a9fe]/x", "http://example.com/hook", "https://localhost/x",
                    "https://0.0.0.0/x", "https://[::]/x", "https://100.64.0.1/x", "https://[fd00:ec2::254]/x",
                    sinks.webhook_url]:
            with pytest.raises(WebhookUrlRefused):
                await svc.send_webhook(url=url, payload={"a": 1})
        assert await svc.outbox.list() == []


async def test_dns_is_resolved_once_and_the_connection_pinned(sinks):
    port = int(sinks.webhook_url.rsplit(":", 1)[1].split("/")[0])
    looked_up: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]  # a name no real DNS knows: only the pinned address can reach the sink

    async with httpx2.AsyncClient() as http:
        svc = NotificationService(
            settings=notify_settings(sinks, webhook_allow_hosts=["hooks.sandbox.test", "127.0.0.1"]),
            http=http, resolver=resolver,
        )
        result = await svc.send_webhook(url=f"http://hooks.sandbox.test:{port}/hooks/default", payload={"p": 1})
    assert result.success, result
    assert looked_up == ["hooks.sandbox.test", "hooks.sandbox.test"]  # at enqueue, and once for the attempt
    assert sinks.messages("webhook")[0].verified


async def test_configuration_errors(sinks):
    async with service(sinks, slack_webhook_url=None, mailtrap_token=None, smtp_host=None) as svc:
        with pytest.raises(ToolFailed, match="SLACK_WEBHOOK_URL"):
            await svc.send_slack_message("x")
        with pytest.raises(ToolFailed, match="email is not configured|mailtrap is not configured"):
            await svc.send_notification("email", "x", to="a@example.com")
        with pytest.raises(ToolRetry, match="channel: unknown channel 'pager'"):
            await svc.send_notification("pager", "x")
        with pytest.raises(ToolRetry, match="^channel:"):
            await svc.send_notification(None, "x")
        with pytest.raises(ToolRetry, match="^priority:"):
            await svc.send_notification("webhook", "x", url=sinks.webhook_url, priority="urgent")
    async with service(sinks) as svc:
        with pytest.raises(ToolRetry, match="^to:"):
            await svc.send_email_mailtrap(to="not-an-address", subject="s", body="b")
    with pytest.raises(ConfigError, match="notify.webhooks.bad.url"):
        NotificationService(settings=NotifySettings(webhooks={"bad": NotifyWebhook(url="http://10.0.0.1/x")}))


# -- secrets -------------------------------------------------------------------------------------------------------------


async def test_no_secret_in_messages_errors_or_logs(sinks, caplog):
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # as configure_logging does: it logs full URLs at INFO
    caplog.set_level(logging.DEBUG, logger="ops_agent")
    token = "mt-live-token-5f0c9a7e3b"
    secrets = [token, sinks.slack_url, sinks.config.slack_webhooks[0].secret, sinks.webhook_secret, "hunter2hunter2"]
    async with httpx2.AsyncClient() as http:
        svc = NotificationService(settings=notify_settings(sinks, mailtrap_token=token), http=http,
                                  redactor=Redactor(secrets))
        sinks.set_slack_state(sinks.config.slack_webhooks[0].name, "revoked")
        sinks.fail_next("webhook", 500, count=2)
        result = await svc.send_notification(
            ["email", "slack", "webhook"], f"leaked password=hunter2hunter2 and {token}", subject=f"token {token}",
            to="a@example.com", url=sinks.webhook_url, payload={"api_key": "abc123", "note": token},
        )
        errors = []
        for bad in ("https://10.0.0.1/x", "http://[::1]/x"):
            with pytest.raises(WebhookUrlRefused) as caught:
                await svc.send_webhook(url=bad + "?sig=" + token, payload={})
            errors.append(str(caught.value))
    text = "\n".join([result.model_dump_json(), *errors, caplog.text,
                      *(str(m.payload) for m in sinks.inbox), *(str(r.args) for r in caplog.records)])
    for secret in secrets:
        assert secret not in text
    assert "abc123" not in text
    assert any(d.status == "failed" and "invalid_token" in (d.error or "") for d in result.deliveries)
