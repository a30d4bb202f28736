"""Standard Webhooks signatures (../shared/contracts/NOTIFY.md §4): HMAC-SHA256 over
`{webhook_id}.{webhook_timestamp}.{raw_body}`, keyed with the base64-decoded bytes after `whsec_`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """Why a delivery was refused (missing header, bad timestamp, no matching signature)."""


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one delivery: `v1,<base64>`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: dict[str, str], body: bytes, *, now: float, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> None:
    """Raise SignatureError unless the headers carry a fresh, valid v1 signature of `body`."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        raise SignatureError("missing required headers")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureError("invalid signature headers") from None
    if now - sent > tolerance_s:
        raise SignatureError("message timestamp too old")
    if sent - now > tolerance_s:
        raise SignatureError("message timestamp too new")
    expected = base64.b64decode(sign(secret, msg_id, sent, body).split(",", 1)[1])
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except ValueError:
            continue
        if hmac.compare_digest(candidate, expected):
            return
    raise SignatureError("no matching signature found")
