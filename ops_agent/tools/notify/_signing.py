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
    """An inbound webhook did not verify (the message never includes the secret).

    `header` names the header at fault, so a receiver can tell a stale or malformed message (400) from a
    forged one (401)."""

    def __init__(self, message: str, header: str = "webhook-signature") -> None:
        super().__init__(message)
        self.header = header


MAX_ID_CHARS = 256  # a receiver stores the id to refuse replays


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
    """Check an inbound webhook; returns its webhook-id, raises WebhookSignatureError naming the header.

    Every `v1,` entry of webhook-signature is compared with `hmac.compare_digest` (rotation sends several);
    other versions are ignored, per the spec."""
    lowered = {key.lower(): value for key, value in headers.items()}
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lowered.get(header, "").strip():
            raise WebhookSignatureError(f"missing header {header}", header)
    msg_id, stamp, signatures = lowered["webhook-id"], lowered["webhook-timestamp"], lowered["webhook-signature"]
    # A '.' in the id would let a signature be re-read with a different id and timestamp (they are
    # '.'-joined in the signed content); senders never put one there.
    if "." in msg_id or len(msg_id) > MAX_ID_CHARS:
        raise WebhookSignatureError(f"webhook-id: must be at most {MAX_ID_CHARS} characters without '.'", "webhook-id")
    # Digits only: int() would also take '+1', ' 1' and '1_0', each signed as a different string.
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookSignatureError("webhook-timestamp is not an integer", "webhook-timestamp")
    timestamp = int(stamp)
    if timestamp < now - tolerance_s:
        raise WebhookSignatureError(
            f"webhook-timestamp: message timestamp too old (more than {tolerance_s:g} s before now)", "webhook-timestamp"
        )
    if timestamp > now + tolerance_s:
        raise WebhookSignatureError(
            f"webhook-timestamp: message timestamp too new (more than {tolerance_s:g} s after now)", "webhook-timestamp"
        )
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
    raise WebhookSignatureError("webhook-signature: no matching signature")
