"""No secret reaches a log line, an audit record or an error message."""

from __future__ import annotations

import logging

import pytest

from ops_agent.redact import MASK, RedactingFilter, Redactor

REAL_LOOKING = [
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "ANTHROPIC_API_KEY=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "slack: xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "posting to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "db at postgres://ops:S3cr3tP4ss@db.internal:5432/ops",
    "password=hunter2!",
    'api_key: "abcd1234efgh5678"',
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
]
SECRET_PARTS = ["dozjgNryP4J3", "AbCdEfGhIjKl", "T00000000/B00000000", "S3cr3tP4ss", "hunter2", "abcd1234efgh", "MIIEowIBAAKCAQEA"]


@pytest.mark.parametrize("line", REAL_LOOKING)
def test_secret_shapes_are_masked(line):
    cleaned = Redactor().text(line)
    assert MASK in cleaned
    assert not any(part in cleaned for part in SECRET_PARTS), cleaned


def test_configured_secret_values_are_masked_anywhere():
    redactor = Redactor(["vercel-tok-9f8e7d6c"])
    assert redactor.text("calling with vercel-tok-9f8e7d6c inside") == f"calling with {MASK} inside"
    assert redactor.value({"nested": ["x vercel-tok-9f8e7d6c"]}) == {"nested": [f"x {MASK}"]}


def test_ordinary_text_is_left_alone():
    text = "max_tokens: 2048 input_tokens=538 deploy dpl_123 to production; cpu 93%"
    assert Redactor().text(text) == text
    assert Redactor().value({"max_tokens": 5, "input_tokens": 7}) == {"max_tokens": 5, "input_tokens": 7}


def test_secret_keys_are_masked_whole():
    assert Redactor().value({"token": "abc", "password": "p", "service": "api"}) == {
        "token": MASK, "password": MASK, "service": "api",
    }


def test_log_lines_and_tracebacks_are_scrubbed(caplog):
    logger = logging.getLogger("test.redact")
    filter_ = RedactingFilter(Redactor(["topsecretvalue42"]))
    logger.addFilter(filter_)
    try:
        logger.warning("token is %s", "topsecretvalue42")
        try:
            raise RuntimeError("failed with topsecretvalue42")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeFilter(filter_)
    assert "topsecretvalue42" not in caplog.text
    assert "RuntimeError: failed with [REDACTED]" in caplog.text
