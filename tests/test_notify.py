"""Notify units: Standard Webhooks signing, the SSRF egress check, escaping, backoff, Retry-After, the rate
limiter and the outbox state machine on a real SQLite database."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from ops_agent.errors import ToolRetry
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.notify import (
    DeliveryResult,
    MemoryOutbox,
    Notification,
    OutboxEntry,
    RateLimiter,
    SqliteOutbox,
    WebhookSignatureError,
    WebhookUrlRefused,
    backoff_delay,
    check_webhook_url,
    entry_id,
    escape_html,
    escape_slack,
    parse_retry_after,
    resolve_webhook_url,
    sign_webhook,
    signature_headers,
    verify_webhook,
)
from ops_agent.tools.notify._text import render_slack_text

# -- Standard Webhooks -----------------------------------------------------------------------------------------

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_webhooks_test_vector():
    assert sign_webhook(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = signature_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
    assert verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 10) == VECTOR_ID


def test_verification_rejects_tampering_age_and_missing_headers():
    headers = signature_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    with pytest.raises(WebhookSignatureError, match="no matching"):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY + b" ", now=VECTOR_TS)
    with pytest.raises(WebhookSignatureError, match="too old"):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 301)
    with pytest.raises(WebhookSignatureError, match="too new"):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS - 301)
    with pytest.raises(WebhookSignatureError, match="webhook-signature"):
        verify_webhook(VECTOR_SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, VECTOR_BODY,
                       now=VECTOR_TS)
    # rotation: an unknown version and a stale key precede the good one
    rotated = dict(headers, **{"webhook-signature": "v1a,AAAA v1,bm9wZQ== " + VECTOR_SIGNATURE})
    assert verify_webhook(VECTOR_SECRET, rotated, VECTOR_BODY, now=VECTOR_TS) == VECTOR_ID
    with pytest.raises(ValueError):
        signature_headers(VECTOR_SECRET, "msg.with.dots", VECTOR_TS, VECTOR_BODY)


# -- SSRF ------------------------------------------------------------------------------------------------------

REFUSED_LITERALS = [
    ("https://127.0.0.1/hook", "loopback"),
    ("https://[::1]/hook", "loopback"),
    ("https://[::ffff:127.0.0.1]/hook", "IPv4-mapped loopback"),
    ("https://[::ffff:169.254.169.254]/hook", "IPv4-mapped cloud metadata"),
    ("https://[64:ff9b::a9fe:a9fe]/hook", "NAT64 cloud metadata"),  # 169.254.169.254 via NAT64
    ("https://[64:ff9b::7f00:1]/hook", "NAT64 loopback"),
    ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("https://[fd00:ec2::254]/latest", "cloud metadata"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://[::]/hook", "unspecified"),
    ("https://100.64.0.1/hook", "carrier-grade NAT"),
    ("https://10.1.2.3/hook", "private"),
    ("https://192.168.1.1/hook", "private"),
    ("https://172.16.0.1/hook", "private"),
    ("https://169.254.10.10/hook", "link-local"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://[fc00::1]/hook", "private"),
    ("https://[2002:7f00:1::]/hook", "6to4 loopback"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_LITERALS)
def test_forbidden_addresses_are_refused(url, reason):
    with pytest.raises(WebhookUrlRefused, match=reason) as caught:
        check_webhook_url(url)
    assert caught.value.public_message.startswith("url: ")
    assert "/hook" not in caught.value.public_message and "meta-data" not in caught.value.public_message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/hook", "only https"),
        ("ftp://example.com/hook", "only https"),
        ("file:///etc/passwd", "only https"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://example.com\\@evil/hook", "malformed"),
        ("https:///nohost", "no host"),
        ("https://exa mple.com/", "malformed"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url, problem):
    with pytest.raises(WebhookUrlRefused, match=problem):
        check_webhook_url(url)


def test_allow_list_lifts_scheme_and_address_rules():
    assert check_webhook_url("http://127.0.0.1:8080/x", allow_hosts=["127.0.0.1"]).allow_listed
    assert check_webhook_url("http://[::1]:8080/x", allow_hosts=["::1"]).port == 8080
    assert check_webhook_url("http://10.0.0.7/x", allow_hosts=["10.0.0.0/8"]).host == "10.0.0.7"
    assert check_webhook_url("https://hooks.example.com/x").allow_listed is False
    with pytest.raises(WebhookUrlRefused):
        check_webhook_url("http://127.0.0.2/x", allow_hosts=["127.0.0.1"])


async def test_every_resolved_address_is_checked_and_the_first_is_pinned():
    answers = {
        "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "rebind.example": ["93.184.216.34", "127.0.0.1"],  # one bad answer is enough to refuse
        "metadata.example": ["169.254.169.254"],
        "mapped.example": ["::ffff:10.0.0.1"],
        "internal.example": ["10.0.0.5"],
    }

    async def resolver(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    pinned = await resolve_webhook_url("https://public.example/a?token=s3cret", resolver=resolver)
    assert pinned.address == "93.184.216.34"
    assert pinned.request_url() == "https://93.184.216.34/a?token=s3cret"
    assert pinned.host_header() == "public.example"
    for host, reason in [("rebind", "loopback"), ("metadata", "cloud metadata"), ("mapped", "IPv4-mapped private")]:
        with pytest.raises(WebhookUrlRefused, match=reason) as caught:
            await resolve_webhook_url(f"https://{host}.example/a?token=s3cret", resolver=resolver)
        assert "s3cret" not in caught.value.public_message
    with pytest.raises(WebhookUrlRefused, match="does not resolve"):
        await resolve_webhook_url("https://nowhere.example/", resolver=resolver)
    # an allow-listed network admits a private answer (an internal receiver), over https only
    pinned = await resolve_webhook_url("https://internal.example:8443/h", ["10.0.0.0/8"], resolver)
    assert (pinned.request_url(), pinned.host_header()) == ("https://10.0.0.5:8443/h", "internal.example:8443")
    # the real resolver: localhost is loopback
    with pytest.raises(WebhookUrlRefused, match="loopback"):
        await resolve_webhook_url("https://localhost/")
    assert isinstance(WebhookUrlRefused("x"), ToolRetry)


# -- escaping ---------------------------------------------------------------------------------------------------


def test_slack_escaping_defuses_mentions_broadcasts_and_links():
    hostile = "<!channel> <@U123> <http://evil.example|click me> a&b"
    escaped = escape_slack(hostile)
    assert "<" not in escaped and ">" not in escaped
    assert escaped == "&lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|click me&gt; a&amp;b"
    assert render_slack_text("<!here>", "x") == "*&lt;!here&gt;*\nx"
    assert escape_slack("&lt;") == "&amp;lt;"  # a pre-escaped sequence cannot sneak through


def test_html_escaping():
    assert escape_html('<script>alert("x")</script> & \'') == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;"
    )


# -- backoff, Retry-After, rate limits ---------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 30.0)]:
        delays = [backoff_delay(attempt, base_s=1.0, max_s=30.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 120, usegmt=True), now=now) == pytest.approx(120, abs=1)


async def test_rate_limiter_spaces_sends_per_key():
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter({"slack": 1.0, "webhook": 0.5}, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await limiter.wait("slack")
    assert slept == [1.0, 1.0]
    await limiter.wait("webhook:pager")  # inherits the webhook limit, on its own key
    await limiter.wait("webhook:pager")
    assert slept[-1] == 0.5
    await limiter.wait("mailtrap")  # no limit configured
    assert len(slept) == 3
    limiter.defer("slack", 5.0)  # a 429's Retry-After holds the whole channel
    await limiter.wait("slack")
    assert slept[-1] == pytest.approx(5.0)


# -- the outbox state machine ------------------------------------------------------------------------------------


def _entry(nid: str, channel: str, at: float = 1000.0) -> OutboxEntry:
    eid = entry_id(nid, channel)
    n = Notification(id=eid, notification_id=nid, channel=channel, subject="s", message="m", created_at=at)
    return OutboxEntry(id=eid, notification=n, next_attempt_at=at, updated_at=at)


@pytest.fixture(params=["sqlite", "memory"])
async def outbox(request, tmp_path):
    if request.param == "memory":
        yield MemoryOutbox()
        return
    db = SqliteDatabase(tmp_path / "notify.db")
    await db.open()
    box = SqliteOutbox(db)
    await box.migrate()
    await box.migrate()  # idempotent
    yield box
    await db.close()


def test_entry_ids_are_stable_and_dot_free():
    assert entry_id("n1", "slack") == entry_id("n1", "slack")
    assert entry_id("n1", "slack") != entry_id("n1", "mailtrap") != entry_id("n2", "slack")
    assert "." not in entry_id("a.b", "webhook:x")


async def test_outbox_state_machine(outbox):
    a, b = _entry("n1", "slack"), _entry("n1", "mailtrap")
    assert await outbox.add([a, b]) == [a.id, b.id]
    assert await outbox.add([a]) == []  # same notification x channel: stored once
    assert [e.id for e in await outbox.due(1000.0)] == [a.id, b.id]
    assert await outbox.due(999.0) == []

    claimed = await outbox.claim(a.id, 1000.0)
    assert claimed.status == "sending" and claimed.attempts == 1
    assert await outbox.claim(a.id, 1000.0) is None  # one sender only
    await outbox.reschedule(a.id, error="slack: HTTP 500", status_code=500, next_attempt_at=1010.0, now=1000.0)
    assert [e.id for e in await outbox.due(1005.0)] == [b.id]
    assert await outbox.claim(a.id, 1005.0) is None  # not due yet
    assert await outbox.next_due_at() == 1000.0
    claimed = await outbox.claim(a.id, 1010.0)
    assert claimed.attempts == 2 and claimed.last_error == "slack: HTTP 500"
    await outbox.mark_delivered(a.id, DeliveryResult(channel="slack", status_code=200, provider_ids=["x"]), 1011.0)
    [done] = await outbox.get([a.id])
    assert (done.status, done.provider_ids, done.last_error) == ("delivered", ["x"], None)

    # a final failure inserts its fallback in the same transaction
    await outbox.claim(b.id, 1012.0)
    fallback = _entry("n1", "smtp", 1012.0)
    fallback.fallback_of = b.id
    await outbox.mark_failed(b.id, error="permanent", status_code=401, now=1012.0, fallback=fallback)
    by_id = {e.id: e for e in await outbox.for_notification("n1")}
    assert by_id[b.id].status == "failed" and by_id[b.id].fallback_entry == fallback.id
    assert by_id[fallback.id].status == "pending" and by_id[fallback.id].fallback_of == b.id
    assert by_id[b.id].result().fallback_entry == fallback.id
    assert [e.id for e in await outbox.list(status="failed")] == [b.id]


async def test_outbox_recovery_resends_or_drops_in_doubt_entries(outbox):
    hook, slack = _entry("n2", "webhook"), _entry("n2", "slack")
    await outbox.add([hook, slack])
    await outbox.claim(hook.id, 1000.0)
    await outbox.claim(slack.id, 1000.0)
    # a process died here; only the channel that dedupes is resent
    assert await outbox.recover(2000.0, lambda channel: channel == "webhook") == (1, 1)
    by_id = {e.id: e for e in await outbox.for_notification("n2")}
    assert by_id[hook.id].status == "pending" and by_id[hook.id].next_attempt_at == 2000.0
    assert by_id[slack.id].status == "failed" and "interrupted" in by_id[slack.id].last_error
    assert await outbox.recover(2001.0, lambda channel: True) == (0, 0)


async def test_sqlite_outbox_survives_reopening(tmp_path):
    path = tmp_path / "notify.db"
    db = SqliteDatabase(path)
    await db.open()
    box = SqliteOutbox(db)
    await box.migrate()
    await box.add([_entry("n3", "slack", time.time())])
    await db.close()
    db = SqliteDatabase(path)
    await db.open()
    box = SqliteOutbox(db)
    await box.migrate()
    [entry] = await box.for_notification("n3")
    assert entry.status == "pending" and entry.notification.message == "m"
    await db.close()
