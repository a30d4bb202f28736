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


# Secrets as they appear in real log lines: each must be gone after redaction, the rest of the line kept.
LOG_LINE_SECRETS = [
    ("curl -H 'Authorization: Bearer ghp_16C7e42F292c6912E7710c838347Ae178B4a' api.github.com", "16C7e42F292c6912E7710c838347Ae178B4a"),
    ("aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG"),
    ("charging with sk_live_4eC39HqLyjWDarjtT1zdp7dc failed", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("maps key AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI loaded", "AIzaSyDdI0hCZtE6vySjMm"),
    ("OPENAI_API_KEY=sk-proj-abcdefghijklmnop1234567890ABCD", "abcdefghijklmnop1234567890"),
    ("npm publish with npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("mail via 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", "TwL2iGABf9DHoTf"),
    ('{"level":"info","msg":"login","password":"correct horse","user":"ann"}', "correct horse"),
    ("connecting to mysql://root:Pa55w0rd!@10.0.0.5:3306/app", "Pa55w0rd!"),
    ("redis://:r3dis-s3cret@cache:6379/0", "r3dis-s3cret"),
    ("GET /callback?code=abc&access_token=ya29.a0AfH6SMBx3 200", "ya29.a0AfH6SMBx3"),
    ("X-Api-Key: 9c8b7a6f5e4d3c2b1a0f", "9c8b7a6f5e4d3c2b1a0f"),
    ("set-cookie session_id=8f14e45fceea167a5a36dedd4bea2543; Path=/", "8f14e45fceea167a5a36dedd4bea2543"),
    ("client_secret: Zx9yW8vU7tS6rQ5p", "Zx9yW8vU7tS6rQ5p"),
    ("-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAABG5vbmU", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU"),
    ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"),
    ("token=xoxp-2048-1234-5678-abcdef0123456789abcdef", "abcdef0123456789abcdef"),
]


@pytest.mark.parametrize(("line", "secret"), LOG_LINE_SECRETS)
def test_real_looking_secrets_in_log_lines_are_masked(line, secret):
    cleaned = Redactor().text(line)
    assert secret not in cleaned, cleaned
    assert MASK in cleaned


def test_a_log_line_without_secrets_keeps_every_character():
    lines = [
        '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /api/tokens/list HTTP/1.1" 200 2326',
        "2026-01-31T12:00:00Z ERROR db connection refused after 3 attempts (timeout=30s)",
        "level=info msg=\"rotated keys\" max_tokens=4096 duration_ms=12",
    ]
    for line in lines:
        assert Redactor().text(line) == line
