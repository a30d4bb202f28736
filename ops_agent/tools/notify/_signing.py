"""Standard Webhooks signing (standard-webhooks spec; ../shared/contracts/NOTIFY.md §4).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}` over the exact bytes sent; the key is the
base64-decoded part of `whsec_<base64>`. Verification is here too, for inbound webhooks and for tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["WebhookSignatureError", "sign_webhook", "signature_headers", "verify_webhook"]

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 5 * 60


class WebhookSignatureError(ValueError):
    """An inbound webhook did not verify (the message never includes the secret)."""


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not whsec_ followed by base64") from None


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64 HMAC-SHA256>` signature of one attempt."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: str | None, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id / webhook-timestamp, and webhook-signature when there is a secret."""
    if "." in msg_id:
        raise ValueError("webhook-id must not contain '.'")  # the id is a field of the signed content
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = sign_webhook(secret, msg_id, timestamp, body)
    return headers


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance_s: float = TOLERANCE_S
) -> str:
    """Check an inbound webhook; returns its webhook-id, raises WebhookSignatureError."""
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        msg_id, stamp, signatures = (
            lowered["webhook-id"], lowered["webhook-timestamp"], lowered["webhook-signature"]
        )
    except KeyError as exc:
        raise WebhookSignatureError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp is not an integer") from None
    if timestamp < now - tolerance_s:
        raise WebhookSignatureError("message timestamp too old")
    if timestamp > now + tolerance_s:
        raise WebhookSignatureError("message timestamp too new")
    expected = base64.b64decode(sign_webhook(secret, msg_id, timestamp, body)[3:])
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # unknown versions (v1a, future ones) are ignored, per the spec
        try:
            candidate = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(candidate, expected):
            return msg_id
    raise WebhookSignatureError("no matching signature")
