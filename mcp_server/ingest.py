"""HTTP log ingest beside MCP: `POST /ingest/logs` (NDJSON, a JSON array or plain lines) and
`POST /ingest/vercel` (Vercel's log-drain delivery, signed with `x-vercel-signature`) and
`POST /ingest/sentry` (Sentry issue-alert and issue webhooks, signed with `Sentry-Hook-Signature`).

These are the data plane: systems pushing lines, authenticated by a token or a signature, not agents
acting. So they don't pass the governance gate one request at a time (a busy drain would flood the
audit trail); what they write is scrubbed of secrets like every other source.

Who may post: with `logs.drain_secret` set, a Vercel delivery must carry a valid signature (else 403).
With `logs.webhook_secret` set, a request to /ingest/logs that carries `webhook-signature` is judged by its
Standard Webhooks signature alone (../shared/contracts/NOTIFY.md §4): a missing or stale header is 400
naming it, a signature that does not match is 401, and a webhook-id already stored answers
`{"accepted": 0, "duplicate": true}` and writes nothing. Otherwise a sender needs `Authorization: Bearer`
with `logs.ingest_token` or one of `mcp.tokens`, unless neither is configured, in which case the server
only listens on loopback and local senders may post:
a request naming another Host (DNS rebinding) or sent from another site's page (its Origin) is refused.
A refused token gets 401 with `WWW-Authenticate: Bearer`. A body over `MAX_BODY_BYTES` gets 413: at once
when its Content-Length says so, else as soon as the chunks read pass the cap.

Processed once: a drain record and each record of a signed message are written with a key (a digest of the
drain entry; webhook-id and position), and the log index stores a key once, in the transaction that writes
it (`LogRecord.key`). Keys already stored are left out before the collector writes the
batch, so a retry neither counts again in the answer nor feeds the log-derived metrics twice.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_server._hosts import refuse_foreign
from ops_agent.errors import OpsAgentError
from ops_agent.services import Services
from ops_agent.tools.logs.ingest.body import json_array
from ops_agent.tools.logs.ingest.vercel_logs import drain_records, valid_drain_signature
from ops_agent.tools.notify import WebhookSignatureError, verify_webhook
from ops_agent.tools.sentry import SIGNATURE_HEADER as SENTRY_SIGNATURE
from ops_agent.tools.sentry import valid_hook_signature, webhook_records

__all__ = ["MAX_BODY_BYTES", "add_ingest_routes"]

log = logging.getLogger("mcp_server")

MAX_BODY_BYTES = 16 * 1024 * 1024


def add_ingest_routes(server: MCPServer, services: Services) -> None:
    settings = services.settings
    tokens = [t.get_secret_value().encode() for t in settings.mcp.tokens.values()]
    if settings.logs.ingest_token is not None:
        tokens.append(settings.logs.ingest_token.get_secret_value().encode())
    secret = settings.logs.drain_secret.get_secret_value() if settings.logs.drain_secret else None
    webhook_secret = settings.logs.webhook_secret.get_secret_value() if settings.logs.webhook_secret else None
    collector = services.logs.collector

    def refusal(request: Request, message: str) -> Response | None:
        """None when the sender may post: a known bearer token, or with none configured a local request."""
        if not tokens:  # nothing configured: the server refuses to bind beyond loopback
            return refuse_foreign(request, settings.mcp.allowed_hosts, settings.mcp.allowed_origins)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        candidate = token.strip().encode()
        if scheme.lower() == "bearer" and any(hmac.compare_digest(candidate, known) for known in tokens):
            return None
        return _refuse(401, message)

    async def received(request: Request, *, signed: bool, unsigned: str) -> bytes | Response:
        """The body, or the answer that refuses it: a signed request is judged by its signature (the route
        checks it); any other needs a known bearer token, or a local sender when none is configured."""
        if not signed and (refused := refusal(request, unsigned)):
            return refused
        return await _body(request)

    @server.custom_route("/ingest/logs", methods=["POST"])
    async def ingest_logs(request: Request) -> Response:
        # A request that brings a signature is judged by it, whatever else it carries.
        signed_with = webhook_secret if "webhook-signature" in request.headers else None
        body = await received(request, signed=signed_with is not None,
                              unsigned="a bearer token (logs.ingest_token or an mcp.tokens entry) is required")
        if isinstance(body, Response):
            return body
        msg_id = None
        if signed_with is not None:
            try:
                msg_id = verify_webhook(
                    signed_with, request.headers, body, now=time.time(), tolerance_s=settings.logs.webhook_tolerance_s
                )
            except WebhookSignatureError as exc:  # its text names the header, never the secret
                if exc.header == "webhook-signature":
                    return _refuse(401, f"{exc} (check logs.webhook_secret)")
                return _refuse(400, str(exc))
        service = request.query_params.get("service", "")[:128]
        host = request.query_params.get("host", "")[:256]
        text = body.decode("utf-8", errors="replace")
        if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            try:  # a JSON array of objects or strings: one record each
                items = json_array(text)
            except OpsAgentError as exc:
                return _refuse(400, exc.public_message)
            lines = [item if isinstance(item, str) else json.dumps(item) for item in items]
        else:  # NDJSON or plain text, one record a line (only \n ends a line: JSON may hold U+2028 raw)
            lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
        if msg_id is None:
            return await _write(lambda: collector.write_lines(lines, service=service, host=host))
        # The same message always parses to the same records: its id and a position name each one.
        records = [
            replace(record, key=f"webhook:{msg_id}:{index}")
            for index, record in enumerate(collector.parse_lines(lines, service=service, host=host))
        ]
        return await _write(lambda: collector.write_new(records, scrubbed=True))

    @server.custom_route("/ingest/vercel", methods=["POST"])
    async def ingest_vercel(request: Request) -> Response:
        body = await received(request, signed=secret is not None,
                              unsigned="set logs.drain_secret to accept signed Vercel deliveries, or send a bearer token")
        if isinstance(body, Response):
            return body
        if secret is not None and not valid_drain_signature(body, secret, request.headers.get("x-vercel-signature")):
            return _refuse(403, "x-vercel-signature does not match the body (check logs.drain_secret)")
        try:
            records = drain_records(body)
        except OpsAgentError as exc:
            return _refuse(400, exc.public_message)
        return await _write(lambda: collector.write_new(records))

    sentry_secret = settings.sentry.webhook_secret.get_secret_value() if settings.sentry.webhook_secret else None

    @server.custom_route("/ingest/sentry", methods=["POST"])
    async def ingest_sentry(request: Request) -> Response:
        """Sentry integration-platform webhooks (docs/SENTRY.md): Sentry-Hook-Signature is the HMAC-SHA256 of
        the raw body with the client secret. Its timestamp is not signed, so replays are refused by content
        instead: each record's key (issue and lastSeen, or issue and event) is stored once."""
        body = await received(request, signed=sentry_secret is not None,
                              unsigned="set sentry.webhook_secret (SENTRY_CLIENT_SECRET) to accept Sentry webhooks")
        if isinstance(body, Response):
            return body
        if sentry_secret is not None:
            signature = request.headers.get(SENTRY_SIGNATURE)
            if not signature:
                return _refuse(401, "Sentry-Hook-Signature is missing")
            if not valid_hook_signature(body, sentry_secret, signature):
                return _refuse(401, "Sentry-Hook-Signature does not match the body (check sentry.webhook_secret)")
        resource = request.headers.get("sentry-hook-resource", "")
        if not resource:
            return _refuse(400, "Sentry-Hook-Resource is missing")
        try:
            records = webhook_records(resource, json.loads(body))
        except (ValueError, UnicodeDecodeError):
            return _refuse(400, "body: not JSON")
        except OpsAgentError as exc:
            return _refuse(400, exc.public_message)
        if records is None:  # 200 all the same: Sentry unsubscribes a receiver that keeps failing
            return JSONResponse({"accepted": 0, "ignored": f"{resource[:40]} deliveries carry no error activity"})
        return await _write(lambda: collector.write_new(records))


async def _body(request: Request) -> bytes | JSONResponse:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _refuse(413, f"body: larger than {MAX_BODY_BYTES} bytes; send smaller batches")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _refuse(413, f"body: larger than {MAX_BODY_BYTES} bytes; send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


async def _write(write: Callable[[], Awaitable[int | tuple[int, int]]]) -> JSONResponse:
    try:
        outcome = await write()
    except Exception:
        log.exception("log ingest failed")
        return _refuse(503, "the log index could not store the batch; retry later")
    if isinstance(outcome, int):
        return JSONResponse({"accepted": outcome})
    accepted, duplicates = outcome
    if not duplicates:
        return JSONResponse({"accepted": accepted})
    if not accepted:  # a retry of something stored before: 200, so the sender stops retrying
        return JSONResponse({"accepted": 0, "duplicate": True})
    return JSONResponse({"accepted": accepted, "duplicates": duplicates})


def _refuse(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
