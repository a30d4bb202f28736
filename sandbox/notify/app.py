"""The HTTP face of the sinks: Slack incoming webhooks, the Mailtrap send API and a Standard Webhooks
receiver, each answering in its service's own shapes (../shared/contracts/NOTIFY.md), plus the inbox.

Every request first waits the added latency, then takes a queued fault if there is one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sandbox.notify.config import SinksConfig, SlackState, SlackWebhookConfig
from sandbox.notify.inbox import CHANNELS, Channel, Fault, Inbox
from sandbox.notify.signing import SignatureError, verify

SLACK_ERRORS: dict[str, int] = {
    "invalid_payload": 400,
    "no_text": 400,
    "too_many_attachments": 400,
    "invalid_token": 403,
    "no_service": 404,
    "channel_is_archived": 410,
    "rate_limited": 429,
    "rollup_error": 500,
}
SLACK_STATE_ERRORS: dict[SlackState, str] = {
    "archived": "channel_is_archived",
    "revoked": "invalid_token",
    "disabled": "no_service",
}
SLACK_FAULT_BODIES = {status: code for code, status in SLACK_ERRORS.items() if code != "no_text"}
SLACK_MAX_ATTACHMENTS = 100
SLACK_HEADERS = ("content-type", "user-agent")
MAILTRAP_HEADERS = ("content-type", "user-agent")
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "user-agent")
MAILTRAP_CONTENT_KEYS = ("subject", "text", "html", "category")


class TokenBucket:
    """`rate_per_s` refill, `burst` capacity; `take()` returns 0 or the seconds until a token is free."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


class SinksState:
    """What the routes share: configuration, inbox, clock (for webhook timestamps), runtime knobs."""

    def __init__(self, config: SinksConfig, inbox: Inbox, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.inbox = inbox
        self.clock = clock
        self.latency_s = config.latency_s
        self.slack_states: dict[str, SlackState] = {hook.name: hook.state for hook in config.slack_webhooks}
        self._buckets: dict[str, TokenBucket] = {}

    def slack_webhook(self, name: str) -> SlackWebhookConfig:
        for hook in self.config.slack_webhooks:
            if hook.name == name:
                return hook
        raise KeyError(f"no Slack webhook named {name!r}")

    def slack_by_path(self, team: str, bot: str, secret: str) -> SlackWebhookConfig | None:
        for hook in self.config.slack_webhooks:
            if (hook.team, hook.bot, hook.secret) == (team, bot, secret):
                return hook
        return None

    def slack_wait_s(self, name: str) -> float:
        if self.config.slack_rate_per_s is None:
            return 0.0
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(self.config.slack_rate_per_s, self.config.slack_burst)
        return bucket.take()

    def webhook_secret(self, name: str) -> str:
        return self.config.webhook_secrets.get(name, self.config.webhook_secret)


def _picked(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    return {name: request.headers[name] for name in names if name in request.headers}


def _retry_after(response: Response, seconds: float | None) -> Response:
    if seconds is not None:
        response.headers["Retry-After"] = str(max(0, math.ceil(seconds)))
    return response


def _fault_response(channel: Channel, fault: Fault) -> Response:
    if channel == "mailtrap":
        if fault.body is None:
            phrase = HTTPStatus(fault.status).phrase if fault.status in HTTPStatus._value2member_map_ else "Error"
            response: Response = JSONResponse({"success": False, "errors": [phrase]}, fault.status)
        else:
            try:
                json.loads(fault.body)
                response = Response(fault.body, fault.status, media_type="application/json")
            except ValueError:
                response = PlainTextResponse(fault.body, fault.status)
    elif channel == "slack":
        response = PlainTextResponse(
            fault.body if fault.body is not None else SLACK_FAULT_BODIES.get(fault.status, "internal_error"),
            fault.status,
        )
    else:
        default = HTTPStatus(fault.status).phrase if fault.status in HTTPStatus._value2member_map_ else "error"
        response = PlainTextResponse(fault.body if fault.body is not None else default, fault.status)
    return _retry_after(response, fault.retry_after)


async def _begin(state: SinksState, channel: Channel) -> Fault | None:
    if state.latency_s > 0:
        await asyncio.sleep(state.latency_s)
    return state.inbox.take_fault(channel)


def _answer(
    state: SinksState, channel: Channel, request: Request, response: Response, reason: str, fault: Fault | None
) -> Response:
    """Log the attempt; a fault queued with after_delivery replaces a success answer."""
    if fault is not None and response.status_code < 300:
        state.inbox.attempt(channel, request.url.path, fault.status, "fault-after-delivery")
        return _fault_response(channel, fault)
    state.inbox.attempt(channel, request.url.path, response.status_code, reason)
    return response


# -- Slack ---------------------------------------------------------------------------------------------------


def _slack_error(code: str, retry_after: float | None = None) -> Response:
    return _retry_after(PlainTextResponse(code, SLACK_ERRORS[code]), retry_after)


def _slack_payload(content_type: str, body: bytes) -> dict[str, Any] | None:
    try:
        if content_type.startswith("application/json"):
            data = json.loads(body)
        elif content_type.startswith("application/x-www-form-urlencoded"):
            [raw] = parse_qs(body.decode(), strict_parsing=True)["payload"]
            data = json.loads(raw)
        else:
            return None
    except (ValueError, KeyError):  # bad JSON, bad form, no or several `payload` fields
        return None
    return data if isinstance(data, dict) else None


def _slack_check(payload: dict[str, Any]) -> str | None:
    text, blocks, attachments = payload.get("text"), payload.get("blocks"), payload.get("attachments")
    if text is not None and not isinstance(text, str):
        return "invalid_payload"
    if blocks is not None and not (isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks)):
        return "invalid_payload"
    if attachments is not None:
        if not isinstance(attachments, list):
            return "invalid_payload"
        if len(attachments) > SLACK_MAX_ATTACHMENTS:
            return "too_many_attachments"
    if not (text or "").strip() and not blocks:
        return "no_text"
    return None


async def slack_webhook(request: Request) -> Response:
    state: SinksState = request.app.state.sinks
    fault = await _begin(state, "slack")
    if fault is not None and not fault.after_delivery:
        state.inbox.attempt("slack", request.url.path, fault.status, "fault")
        return _fault_response("slack", fault)
    params = request.path_params
    hook = state.slack_by_path(params["team"], params["bot"], params["secret"])
    if hook is None:
        return _answer(state, "slack", request, _slack_error("invalid_token"), "invalid_token", None)
    if (error := SLACK_STATE_ERRORS.get(state.slack_states.get(hook.name, hook.state))) is not None:
        return _answer(state, "slack", request, _slack_error(error), error, None)
    if (wait_s := state.slack_wait_s(hook.name)) > 0:
        return _answer(state, "slack", request, _slack_error("rate_limited", wait_s), "rate_limited", None)
    payload = _slack_payload(request.headers.get("content-type", ""), await request.body())
    error = "invalid_payload" if payload is None else _slack_check(payload)
    if error is not None:
        return _answer(state, "slack", request, _slack_error(error), error, None)
    state.inbox.add(
        channel="slack", path=request.url.path, name=hook.name, payload=payload,
        headers=_picked(request, SLACK_HEADERS), received_at=state.clock(),
    )
    return _answer(state, "slack", request, PlainTextResponse("ok"), "ok", fault)


# -- Mailtrap ------------------------------------------------------------------------------------------------


def _mailtrap_error(status: int, *errors: str) -> Response:
    return JSONResponse({"success": False, "errors": list(errors)}, status)


def _address_errors(value: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"'{where}' must be an object with an email"]
    email = value.get("email")
    if not isinstance(email, str) or "@" not in email.strip("@") or any(c.isspace() for c in email):
        return [f"'{where}.email' is not a valid email address"]
    if "name" in value and not isinstance(value["name"], str):
        return [f"'{where}.name' must be a string"]
    return []


def _mailtrap_errors(body: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    if "from" not in body:
        errors.append("'from' is required")
    else:
        errors += _address_errors(body["from"], "from")
    to = body.get("to")
    if not isinstance(to, list) or not to:
        errors.append("'to' must be a non-empty list of addresses")
    for field in ("to", "cc", "bcc"):
        value = body.get(field)
        if value is None and field != "to":
            continue
        if not isinstance(value, list):
            if field != "to":
                errors.append(f"'{field}' must be a list of addresses")
            continue
        for i, address in enumerate(value):
            errors += _address_errors(address, f"{field}[{i}]")
    if "template_uuid" in body:
        if not isinstance(body["template_uuid"], str) or not body["template_uuid"]:
            errors.append("'template_uuid' must be a non-empty string")
        if (variables := body.get("template_variables")) is not None and not isinstance(variables, dict):
            errors.append("'template_variables' must be an object")
        for key in MAILTRAP_CONTENT_KEYS:
            if key in body:
                errors.append(f"'{key}' is not allowed with 'template_uuid'")
    else:
        subject = body.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            errors.append("'subject' is required")
        text, html = body.get("text"), body.get("html")
        if not (isinstance(text, str) and text) and not (isinstance(html, str) and html):
            errors.append("'text' or 'html' is required")
        for key in ("text", "html", "category"):
            if key in body and not isinstance(body[key], str):
                errors.append(f"'{key}' must be a string")
    attachments = body.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list):
            errors.append("'attachments' must be a list")
        else:
            for i, item in enumerate(attachments):
                if not isinstance(item, dict) or not item.get("content") or not item.get("filename"):
                    errors.append(f"'attachments[{i}]' needs content and filename")
    for key in ("headers", "custom_variables"):
        if key in body and not isinstance(body[key], dict):
            errors.append(f"'{key}' must be an object")
    return errors


def _mailtrap_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-token")


async def mailtrap_send(request: Request) -> Response:
    state: SinksState = request.app.state.sinks
    fault = await _begin(state, "mailtrap")
    if fault is not None and not fault.after_delivery:
        state.inbox.attempt("mailtrap", request.url.path, fault.status, "fault")
        return _fault_response("mailtrap", fault)
    if _mailtrap_token(request) not in state.config.mailtrap_tokens:
        return _answer(state, "mailtrap", request, _mailtrap_error(401, "Unauthorized"), "unauthorized", None)
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        error = _mailtrap_error(400, "Request body must be a JSON object")
        return _answer(state, "mailtrap", request, error, "invalid_json", None)
    if errors := _mailtrap_errors(body):
        return _answer(state, "mailtrap", request, _mailtrap_error(400, *errors), "invalid_payload", None)
    recipients = [a["email"] for field in ("to", "cc", "bcc") for a in body.get(field) or []]
    message_ids = [str(uuid.uuid4()) for _ in recipients]
    inbox_id = request.path_params.get("inbox_id")
    state.inbox.add(
        channel="mailtrap", path=request.url.path, name=f"sandbox:{inbox_id}" if inbox_id else "transactional",
        recipients=recipients, payload={**body, "message_ids": message_ids},
        headers=_picked(request, MAILTRAP_HEADERS), received_at=state.clock(),
    )
    response = JSONResponse({"success": True, "message_ids": message_ids})
    return _answer(state, "mailtrap", request, response, "ok", fault)


# -- Standard Webhooks receiver ------------------------------------------------------------------------------


async def webhook(request: Request) -> Response:
    state: SinksState = request.app.state.sinks
    fault = await _begin(state, "webhook")
    if fault is not None and not fault.after_delivery:
        state.inbox.attempt("webhook", request.url.path, fault.status, "fault")
        return _fault_response("webhook", fault)
    name = request.path_params["name"]
    raw = await request.body()
    headers = {k: v for k, v in request.headers.items() if k in WEBHOOK_HEADERS}
    verified = True
    try:
        verify(
            state.webhook_secret(name), headers, raw, now=state.clock(), tolerance_s=state.config.webhook_tolerance_s
        )
    except SignatureError as exc:
        if state.config.webhook_require_signature:
            response = JSONResponse({"error": str(exc)}, 401)
            return _answer(state, "webhook", request, response, "bad_signature", None)
        verified = False
    try:
        payload: Any = json.loads(raw)
    except ValueError:
        payload = raw.decode(errors="replace")
    msg_id = headers.get("webhook-id")
    duplicate = bool(msg_id) and state.inbox.seen(f"hook:{name}", msg_id or "")
    state.inbox.add(
        channel="webhook", path=request.url.path, name=name, payload=payload, headers=headers,
        verified=verified, duplicate=duplicate, received_at=state.clock(),
    )
    return _answer(state, "webhook", request, Response(status_code=204), "duplicate" if duplicate else "ok", fault)


# -- inbox -----------------------------------------------------------------------------------------------------


def _channel_param(request: Request) -> Channel | None | Response:
    channel = request.query_params.get("channel")
    if channel is None or channel == "":
        return None
    if channel not in CHANNELS:
        return JSONResponse({"error": f"unknown channel {channel!r}", "channels": list(CHANNELS)}, 400)
    return channel  # type: ignore[return-value]


async def get_inbox(request: Request) -> Response:
    state: SinksState = request.app.state.sinks
    channel = _channel_param(request)
    if isinstance(channel, Response):
        return channel
    messages = [entry.model_dump(mode="json") for entry in state.inbox.messages(channel)]
    return JSONResponse({"count": len(messages), "messages": messages})


async def delete_inbox(request: Request) -> Response:
    state: SinksState = request.app.state.sinks
    reset = request.query_params.get("reset_dedup", "").lower() in ("1", "true", "yes")
    state.inbox.clear(reset_dedup=reset)
    return Response(status_code=204)


async def get_attempts(request: Request) -> Response:
    state: SinksState = request.app.state.sinks
    channel = _channel_param(request)
    if isinstance(channel, Response):
        return channel
    attempts = [attempt.model_dump(mode="json") for attempt in state.inbox.attempts(channel)]
    return JSONResponse({"count": len(attempts), "attempts": attempts})


def create_app(state: SinksState) -> Starlette:
    app = Starlette(
        routes=[
            Route("/services/{team}/{bot}/{secret}", slack_webhook, methods=["POST"]),
            Route("/api/send", mailtrap_send, methods=["POST"]),
            Route("/api/send/{inbox_id}", mailtrap_send, methods=["POST"]),
            Route("/hooks/{name}", webhook, methods=["POST"]),
            Route("/inbox", get_inbox, methods=["GET"]),
            Route("/inbox", delete_inbox, methods=["DELETE"]),
            Route("/attempts", get_attempts, methods=["GET"]),
        ],
        # A sender that goes away mid-request (a crash test does that on purpose) is not an error here.
        exception_handlers={ClientDisconnect: _client_gone},
    )
    app.state.sinks = state
    return app


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)
