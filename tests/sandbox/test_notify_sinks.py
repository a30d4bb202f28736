"""The notification sinks over real sockets: httpx2 to the Slack, Mailtrap and webhook routes, aiosmtplib
to the SMTP server, every answer in the shape ../shared/contracts/NOTIFY.md gives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx2
import pytest

from sandbox.notify import (
    NotifySinks,
    SignatureError,
    SinksConfig,
    SlackWebhookConfig,
    sign,
    verify,
)

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

Start = Callable[..., Awaitable[NotifySinks]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """`await start(clock=..., **SinksConfig keys)`; Slack unthrottled unless a test sets a rate."""
    opened: list[NotifySinks] = []

    async def run(clock: Callable[[], float] = time.time, **config: Any) -> NotifySinks:
        sinks = NotifySinks(SinksConfig(**{"slack_rate_per_s": None, **config}), clock=clock)
        opened.append(await sinks.__aenter__())
        return sinks

    yield run
    for sinks in opened:
        await sinks.__aexit__(None, None, None)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


def mail(**fields: Any) -> dict[str, Any]:
    return {
        "from": {"email": "alerts@ops.example.com", "name": "Ops Agent"},
        "to": [{"email": "oncall@example.com", "name": "On-call"}],
        "subject": "[P1] api error rate 12%",
        "text": "plain body",
        **fields,
    }


def signed(secret: str, body: bytes, msg_id: str = "msg_1", timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


# -- Slack ---------------------------------------------------------------------------------------------------


async def test_slack_accepts_text_and_blocks(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start()
    response = await http.post(sinks.slack_url, json={"text": "api is down <!channel>"})
    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["content-type"].startswith("text/plain")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*down*"}}]
    assert (await http.post(sinks.slack_url, json={"blocks": blocks})).text == "ok"
    form = await http.post(sinks.slack_url, data={"payload": json.dumps({"text": "from a form"})})
    assert form.text == "ok"
    first, second, third = sinks.messages("slack")
    assert first.payload == {"text": "api is down <!channel>"} and first.name == "alerts"
    assert first.path == httpx2.URL(sinks.slack_url).path
    assert second.payload["blocks"] == blocks and third.payload["text"] == "from a form"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_payload"),
        ({"content": b'{"text": "x"}', "headers": {"content-type": "text/plain"}}, 400, "invalid_payload"),
        ({"json": ["text"]}, 400, "invalid_payload"),
        ({"json": {"text": 5}}, 400, "invalid_payload"),
        ({"json": {"text": "  "}}, 400, "no_text"),
        ({"json": {"username": "x"}}, 400, "no_text"),
        ({"json": {"text": "x", "attachments": [{}] * 101}}, 400, "too_many_attachments"),
    ],
)
async def test_slack_payload_errors_are_plain_text(
    start: Start, http: httpx2.AsyncClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    sinks = await start()
    response = await http.post(sinks.slack_url, **kwargs)
    assert (response.status_code, response.text) == (status, code)
    assert response.headers["content-type"].startswith("text/plain")
    assert sinks.messages() == []
    assert [(a.status, a.reason) for a in sinks.attempts("slack")] == [(status, code)]


async def test_slack_unknown_secret_archived_revoked_disabled(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start(
        slack_webhooks=[
            SlackWebhookConfig(),
            SlackWebhookConfig(name="old", bot="B0OLD", state="archived"),
            SlackWebhookConfig(name="revoked", bot="B0REV", state="revoked"),
            SlackWebhookConfig(name="off", bot="B0OFF", state="disabled"),
        ]
    )
    wrong = sinks.slack_url.rsplit("/", 1)[0] + "/wrongSecret"
    cases = [
        (wrong, 403, "invalid_token"),
        (f"{sinks.base_url}/services/T0NOPE/B0NOPE/abc", 403, "invalid_token"),
        (sinks.slack_webhook_url("old"), 410, "channel_is_archived"),
        (sinks.slack_webhook_url("revoked"), 403, "invalid_token"),
        (sinks.slack_webhook_url("off"), 404, "no_service"),
    ]
    for url, status, code in cases:
        response = await http.post(url, json={"text": "x"})
        assert (response.status_code, response.text) == (status, code), url
    sinks.set_slack_state("alerts", "archived")
    assert (await http.post(sinks.slack_url, json={"text": "x"})).text == "channel_is_archived"
    sinks.set_slack_state("alerts", "active")
    assert (await http.post(sinks.slack_url, json={"text": "x"})).text == "ok"
    assert len(sinks.messages("slack")) == 1


async def test_slack_rate_limit_per_webhook_with_retry_after(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start(
        slack_rate_per_s=5.0, slack_burst=2,
        slack_webhooks=[SlackWebhookConfig(), SlackWebhookConfig(name="other", bot="B0OTHER")],
    )
    answers = [await http.post(sinks.slack_url, json={"text": str(i)}) for i in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[2].text == "rate_limited" and answers[2].headers["Retry-After"] == "1"
    other = await http.post(sinks.slack_webhook_url("other"), json={"text": "own bucket"})
    assert other.status_code == 200
    await asyncio.sleep(0.25)  # one token back at 5/s
    assert (await http.post(sinks.slack_url, json={"text": "later"})).status_code == 200
    assert [m.payload["text"] for m in sinks.messages("slack")] == ["0", "1", "own bucket", "later"]


async def test_slack_default_rate_is_one_per_second_with_small_burst(http: httpx2.AsyncClient) -> None:
    async with NotifySinks() as sinks:
        statuses = [(await http.post(sinks.slack_url, json={"text": "x"})).status_code for _ in range(5)]
    assert statuses[0] == 200 and statuses[-1] == 429 and 1 < statuses.count(200) <= 4


# -- Mailtrap ------------------------------------------------------------------------------------------------


async def test_mailtrap_send_returns_one_id_per_recipient(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start()
    body = mail(cc=[{"email": "a@example.com"}], bcc=[{"email": "b@example.com"}], html="<p>html</p>",
                category="alert", headers={"X-Ops-Task": "t_123"}, custom_variables={"task_id": "t_123"})
    response = await http.post(
        f"{sinks.mailtrap_url}/api/send", json=body, headers={"Authorization": f"Bearer {sinks.mailtrap_token}"}
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["success"] is True and len(answer["message_ids"]) == 3
    [entry] = sinks.messages("mailtrap")
    assert entry.recipients == ["oncall@example.com", "a@example.com", "b@example.com"]
    assert entry.payload["subject"] == body["subject"] and entry.payload["message_ids"] == answer["message_ids"]
    template = {k: v for k, v in mail().items() if k not in ("subject", "text")}
    template |= {"template_uuid": "2f45b0aa-bbed-432f-95e4-e145e1965ba2", "template_variables": {"n": 1}}
    sandbox = await http.post(
        f"{sinks.mailtrap_url}/api/send/12345", json=template,
        headers={"Authorization": f"Bearer {sinks.mailtrap_token}"},
    )
    assert sandbox.status_code == 200 and len(sandbox.json()["message_ids"]) == 1
    assert sinks.messages("mailtrap")[1].name == "sandbox:12345"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}])
async def test_mailtrap_unauthorized(start: Start, http: httpx2.AsyncClient, headers: dict[str, str]) -> None:
    sinks = await start()
    response = await http.post(f"{sinks.mailtrap_url}/api/send", json=mail(), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"success": False, "errors": ["Unauthorized"]}
    assert sinks.messages() == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({k: v for k, v in mail().items() if k != "from"}, "'from' is required"),
        (mail(to=[]), "'to' must be a non-empty list"),
        (mail(to=[{"email": "not-an-address"}]), "'to[0].email'"),
        ({k: v for k, v in mail().items() if k != "subject"}, "'subject' is required"),
        ({k: v for k, v in mail().items() if k != "text"}, "'text' or 'html' is required"),
        (mail(template_uuid="abc"), "'subject' is not allowed with 'template_uuid'"),
        (mail(attachments=[{"filename": "log.txt"}]), "'attachments[0]'"),
    ],
)
async def test_mailtrap_validation_errors(
    start: Start, http: httpx2.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    sinks = await start()
    response = await http.post(
        f"{sinks.mailtrap_url}/api/send", json=body, headers={"Authorization": f"Bearer {sinks.mailtrap_token}"}
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["success"] is False and any(fragment in error for error in answer["errors"]), answer
    bad_json = await http.post(
        f"{sinks.mailtrap_url}/api/send", content=b"{", headers={"Authorization": f"Bearer {sinks.mailtrap_token}"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["success"] is False
    assert sinks.messages() == []


# -- webhooks ------------------------------------------------------------------------------------------------


def test_signature_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
    verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 10)
    with pytest.raises(SignatureError, match="too old"):
        verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 301)
    with pytest.raises(SignatureError, match="too new"):
        verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS - 301)
    with pytest.raises(SignatureError, match="no matching"):
        verify(VECTOR_SECRET, headers, b'{"test": 2432232315}', now=VECTOR_TS)


async def test_webhook_receiver_accepts_the_test_vector(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start(clock=lambda: VECTOR_TS + 60.0, webhook_secret=VECTOR_SECRET)
    headers = {
        "webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": f"v1a,bm90LWNoZWNrZWQ= v1,AAAA {VECTOR_SIGNATURE}",  # rotation: any v1 match counts
        "content-type": "application/json",
    }
    response = await http.post(sinks.webhook_url, content=VECTOR_BODY, headers=headers)
    assert response.status_code == 204
    [entry] = await sinks.wait_for(1, channel="webhook")
    assert entry.verified is True and entry.duplicate is False and entry.payload == {"test": 2432232314}
    assert entry.headers["webhook-id"] == VECTOR_ID and entry.name == "default"


@pytest.mark.parametrize("problem", ["missing", "wrong-secret", "tampered", "stale", "future", "not-v1"])
async def test_webhook_bad_signatures_are_401(start: Start, http: httpx2.AsyncClient, problem: str) -> None:
    sinks = await start()
    body = b'{"type": "alert.firing"}'
    now = int(time.time())
    headers = signed(sinks.webhook_secret, body, timestamp=now)
    if problem == "missing":
        del headers["webhook-signature"]
    elif problem == "wrong-secret":
        headers = signed("whsec_" + base64.b64encode(b"another key").decode(), body)
    elif problem == "tampered":
        body = b'{"type": "alert.resolved"}'
    elif problem == "stale":
        headers = signed(sinks.webhook_secret, body, timestamp=now - 301)
    elif problem == "future":
        headers = signed(sinks.webhook_secret, body, timestamp=now + 301)
    else:
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    response = await http.post(sinks.webhook_url, content=body, headers=headers)
    assert response.status_code == 401 and response.json()["error"]
    assert sinks.messages() == [] and sinks.attempts("webhook")[0].reason == "bad_signature"


async def test_webhook_redelivery_is_acknowledged_and_marked_duplicate(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start(webhook_secrets={"billing": "whsec_" + base64.b64encode(b"billing key").decode()})
    body = b'{"type": "alert.firing", "data": {"id": 1}}'
    for _ in range(3):  # a new timestamp per attempt, the same id
        headers = signed(sinks.webhook_secret, body, "msg_a")
        assert (await http.post(sinks.webhook_url, content=body, headers=headers)).status_code == 204
    other = await http.post(sinks.webhook_url, content=body, headers=signed(sinks.webhook_secret, body, "msg_b"))
    assert other.status_code == 204
    # the same id on another hook is not a duplicate there; that hook has its own secret
    billing_secret = sinks.config.webhook_secrets["billing"]
    wrong_secret = signed(sinks.webhook_secret, body, "msg_a")
    assert (await http.post(sinks.hook_url("billing"), content=body, headers=wrong_secret)).status_code == 401
    billing = await http.post(sinks.hook_url("billing"), content=body, headers=signed(billing_secret, body, "msg_a"))
    assert billing.status_code == 204
    assert [(m.name, m.headers["webhook-id"], m.duplicate) for m in sinks.messages("webhook")] == [
        ("default", "msg_a", False), ("default", "msg_a", True), ("default", "msg_a", True),
        ("default", "msg_b", False), ("billing", "msg_a", False),
    ]
    assert len(sinks.messages("webhook", include_duplicates=False)) == 3
    sinks.clear()
    await http.post(sinks.webhook_url, content=body, headers=signed(sinks.webhook_secret, body, "msg_a"))
    assert sinks.messages()[0].duplicate is True  # clearing the inbox keeps the ids seen
    sinks.clear(reset_dedup=True)
    await http.post(sinks.webhook_url, content=body, headers=signed(sinks.webhook_secret, body, "msg_a"))
    assert sinks.messages()[0].duplicate is False


async def test_webhook_unsigned_kept_when_signatures_optional(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start(webhook_require_signature=False)
    response = await http.post(sinks.hook_url("ci"), content=b"not json", headers={"webhook-id": "msg_x"})
    assert response.status_code == 204
    [entry] = sinks.messages("webhook")
    assert entry.verified is False and entry.payload == "not json" and entry.name == "ci"


# -- SMTP ----------------------------------------------------------------------------------------------------


def email_message(subject: str = "[P1] api down", html: bool = True) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Ops Agent <alerts@ops.example.com>"
    message["To"] = "On-call <oncall@example.com>, second@example.com"
    message["Subject"] = subject
    message["X-Ops-Alert"] = "a_1"
    message.set_content("plain body")
    if html:
        message.add_alternative("<p>html body</p>", subtype="html")
    return message


async def test_smtp_plain_receives_and_parses(start: Start) -> None:
    sinks = await start()
    await aiosmtplib.send(email_message(), hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False)
    [entry] = await sinks.wait_for(1, channel="smtp")
    assert entry.payload["subject"] == "[P1] api down"
    assert entry.payload["from"] == "Ops Agent <alerts@ops.example.com>"
    assert entry.payload["to"] == ["oncall@example.com", "second@example.com"]
    assert entry.payload["text"].strip() == "plain body" and entry.payload["html"].strip() == "<p>html body</p>"
    assert entry.recipients == ["oncall@example.com", "second@example.com"]
    assert entry.headers["x-ops-alert"] == "a_1" and entry.verified is False and entry.payload["tls"] is False


async def test_smtp_auth_required(start: Start) -> None:
    sinks = await start(smtp_auth_required=True)
    with pytest.raises(aiosmtplib.SMTPException):
        await aiosmtplib.send(email_message(), hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await aiosmtplib.send(
            email_message(), hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False,
            username=sinks.smtp_username, password="wrong",
        )
    for mechanism in ("PLAIN", "LOGIN"):
        async with aiosmtplib.SMTP(hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False) as client:
            await client.ehlo()
            await client.auth_plain(sinks.smtp_username, sinks.smtp_password) if mechanism == "PLAIN" else (
                await client.auth_login(sinks.smtp_username, sinks.smtp_password)
            )
            await client.send_message(email_message(mechanism, html=False))
    entries = await sinks.wait_for(2, channel="smtp")
    assert [(e.payload["subject"], e.verified, e.payload["authenticated_as"]) for e in entries] == [
        ("PLAIN", True, "sandbox"), ("LOGIN", True, "sandbox"),
    ]
    assert entries[0].payload["html"] is None


async def test_smtp_starttls_and_implicit_tls(start: Start) -> None:
    starttls = await start(smtp_tls="starttls", smtp_auth_required=True)
    await aiosmtplib.send(
        email_message("starttls"), hostname=starttls.smtp_host, port=starttls.smtp_port, start_tls=True,
        tls_context=starttls.smtp_client_tls_context(),
        username=starttls.smtp_username, password=starttls.smtp_password,
    )
    [entry] = await starttls.wait_for(1, channel="smtp")
    assert entry.payload["tls"] is True and entry.verified is True
    implicit = await start(smtp_tls="tls")
    await aiosmtplib.send(
        email_message("tls"), hostname=implicit.smtp_host, port=implicit.smtp_port, use_tls=True,
        tls_context=implicit.smtp_client_tls_context(),
        username=implicit.smtp_username, password=implicit.smtp_password,
    )
    [entry] = await implicit.wait_for(1, channel="smtp")
    assert entry.payload["subject"] == "tls" and entry.payload["tls"] is True and entry.verified is True


# -- faults, latency, inbox ----------------------------------------------------------------------------------


async def test_fail_next_per_channel(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start()
    token = {"Authorization": f"Bearer {sinks.mailtrap_token}"}
    sinks.fail_next("slack", 429, retry_after=3, count=2)
    sinks.fail_next("mailtrap", 503, retry_after=1)
    sinks.fail_next("webhook", 500, body="boom")
    sinks.fail_next("smtp", 451)
    for _ in range(2):
        limited = await http.post(sinks.slack_url, json={"text": "x"})
        assert (limited.status_code, limited.text, limited.headers["Retry-After"]) == (429, "rate_limited", "3")
    assert (await http.post(sinks.slack_url, json={"text": "x"})).text == "ok"
    unavailable = await http.post(f"{sinks.mailtrap_url}/api/send", json=mail(), headers=token)
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "1"
    assert unavailable.json() == {"success": False, "errors": ["Service Unavailable"]}
    body = b"{}"
    failed = await http.post(sinks.webhook_url, content=body, headers=signed(sinks.webhook_secret, body))
    assert (failed.status_code, failed.text) == (500, "boom")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(email_message(), hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False)
    assert refused.value.code == 451
    assert [m.channel for m in sinks.inbox] == ["slack"]
    # the webhook id was not recorded by the failed attempt: its redelivery is the first copy
    redelivery = await http.post(sinks.webhook_url, content=body, headers=signed(sinks.webhook_secret, body))
    assert redelivery.status_code == 204
    assert sinks.messages("webhook")[0].duplicate is False
    assert [a.reason for a in sinks.attempts("slack")] == ["fault", "fault", "ok"]


async def test_fault_after_delivery_is_a_lost_answer(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start()
    sinks.fail_next("mailtrap", 500, after_delivery=True)
    token = {"Authorization": f"Bearer {sinks.mailtrap_token}"}
    lost = await http.post(f"{sinks.mailtrap_url}/api/send", json=mail(), headers=token)
    assert lost.status_code == 500
    assert (await http.post(f"{sinks.mailtrap_url}/api/send", json=mail(), headers=token)).status_code == 200
    assert len(sinks.messages("mailtrap")) == 2  # the retry after a lost answer sent the mail twice
    sinks.fail_next("smtp", 421, after_delivery=True)
    with pytest.raises(aiosmtplib.SMTPException):
        await aiosmtplib.send(email_message(), hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False)
    assert len(sinks.messages("smtp")) == 1
    with pytest.raises(ValueError, match="unknown channel"):
        sinks.fail_next("pager", 500)  # type: ignore[arg-type]


async def test_latency(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start(latency_s=0.2)
    began = time.monotonic()
    assert (await http.post(sinks.slack_url, json={"text": "slow"})).status_code == 200
    assert time.monotonic() - began >= 0.2
    sinks.latency_s = 0
    began = time.monotonic()
    await http.post(sinks.slack_url, json={"text": "fast"})
    assert time.monotonic() - began < 0.2


async def test_inbox_over_http_and_wait_for(start: Start, http: httpx2.AsyncClient) -> None:
    sinks = await start()

    async def later() -> None:
        await asyncio.sleep(0.1)
        await http.post(sinks.slack_url, json={"text": "one"})
        await aiosmtplib.send(email_message(), hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False)

    task = asyncio.create_task(later())
    [smtp] = await sinks.wait_for(1, channel="smtp", timeout_s=5)
    await task
    assert smtp.seq == 2
    with pytest.raises(TimeoutError, match="1 of 2 messages on slack"):
        await sinks.wait_for(2, channel="slack", timeout_s=0.05)
    listing = (await http.get(f"{sinks.base_url}/inbox")).json()
    assert listing["count"] == 2 and [m["channel"] for m in listing["messages"]] == ["slack", "smtp"]
    assert listing["messages"][0]["payload"] == {"text": "one"}
    only_smtp = (await http.get(f"{sinks.base_url}/inbox", params={"channel": "smtp"})).json()
    assert only_smtp["count"] == 1 and only_smtp["messages"][0]["payload"]["subject"] == "[P1] api down"
    assert (await http.get(f"{sinks.base_url}/inbox", params={"channel": "fax"})).status_code == 400
    attempts = (await http.get(f"{sinks.base_url}/attempts")).json()
    assert [(a["channel"], a["status"]) for a in attempts["attempts"]] == [("slack", 200), ("smtp", 250)]
    assert (await http.delete(f"{sinks.base_url}/inbox")).status_code == 204
    assert (await http.get(f"{sinks.base_url}/inbox")).json() == {"count": 0, "messages": []}
    assert sinks.inbox == []


def test_sync_context_manager_and_urls() -> None:
    with NotifySinks() as sinks:
        assert sinks.slack_url.startswith(sinks.base_url + "/services/T")
        assert sinks.webhook_url == sinks.base_url + "/hooks/default"
        assert sinks.webhook_secret.startswith("whsec_") and sinks.mailtrap_url == sinks.base_url
        assert sinks.smtp_host == "127.0.0.1" and sinks.smtp_port > 0
        response = httpx2.post(sinks.slack_url, json={"text": "sync"})
        assert response.text == "ok"


def test_cli_inbox_lists_and_clears(capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.__main__ import main

    with NotifySinks() as sinks:
        httpx2.post(sinks.slack_url, json={"text": "via cli"})
        assert main(["inbox", "--url", sinks.base_url, "--channel", "slack"]) == 0
        listing = json.loads(capsys.readouterr().out)
        assert listing["count"] == 1 and listing["messages"][0]["payload"] == {"text": "via cli"}
        assert main(["inbox", "--url", sinks.base_url, "--clear"]) == 0
        assert sinks.inbox == []
    assert main(["inbox", "--url", sinks.base_url]) == 1  # stopped: cannot reach it
