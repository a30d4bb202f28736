"""Secret scrubbing for everything that leaves the process: log lines, audit records, error text, results.

Two nets: the exact values of every configured secret, and the shapes secrets usually have (bearer tokens,
API keys with well-known prefixes, passwords in URLs, `key=value` pairs whose key sounds secret).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "Redactor", "RedactingFilter"]

MASK = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|token(?!s)|api[_-]?key|access[_-]?key|authorization|credential|"
    r"private[_-]?key|session[_-]?(id|token))",
    re.I,
)
# Each shape with the casefolded substrings one of which any match must contain: a substring test is ~50x
# cheaper than a regex search, so a clean line (nearly every line) costs a few `in` checks per shape.
# (casefold, not lower: it folds what re.IGNORECASE folds, such as the long s.)
_SHAPES: list[tuple[tuple[str, ...], re.Pattern[str]]] = [
    (("bearer", "basic", "digest"), re.compile(r"(?i)\b(bearer|basic|digest)\s+[A-Za-z0-9._~+/=-]{8,}")),
    (("sk-",), re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}")),  # Anthropic, OpenAI
    (("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),  # Slack
    (("hooks.slack.com",), re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    (("akia", "asia"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),  # AWS access key ids
    (("gh", "github_pat_"), re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})")),
    (("k_live_", "k_test_"), re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),  # Stripe
    (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),  # Google API keys
    (("npm_",), re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    (("sg.",), re.compile(r"\bSG\.[\w-]{16,}\.[\w-]{16,}")),  # SendGrid
    (("eyj",), re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+")),  # JWTs
    (("://",), re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)")),  # [user]:password@ in URLs
    ((":\\/\\/",), re.compile(r"(?<=:\\/\\/)[^/\s:@\\]*:[^/\s@]+(?=@)")),  # the same, JSON-escaped (PHP)
    # A whole PEM key; or, in a log cut into lines, its first line to the end.
    (("private key",), re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|.*)")),
]
# A line that is nothing but 60+ base64 characters: the body of a PEM (64 columns) or OpenSSH (70) key cut
# into lines; also any long token logged on its own. Hashes in hex are caught too, a price worth paying.
_KEY_BODY_LINE = re.compile(r"(?m)^[A-Za-z0-9+/]{60,}={0,2}\r?$")
# key=value, key: value, "key": "value", key => "value" where the key sounds secret; the key stays readable
# and a quoted value keeps its quotes. An Authorization value keeps its scheme out ("Token", "Bearer").
_KEY_VALUE_WORDS = ("pass", "pwd", "secret", "token", "key", "session", "credential", "authorization")
_KEY_VALUE = re.compile(
    r"(?i)((?:pass(?:word|wd|phrase)?(?!ed\b|es\b|ing\b|age)|pwd|secret|token(?!s)|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"session[_-]?(?:id|token)|credentials?|authorization)[A-Za-z_-]*[\"']?\s*(?:=>|[=:])\s*"
    r"(?:(?:bearer|basic|token|digest)\s+)?)"
    r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,;&\"'}]+)"
)


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[0] in "\"'" and len(value) > 1 else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


class Redactor:
    """Replaces known secret values and secret-shaped substrings with MASK."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret that contains another is masked whole; very short values would mask noise.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        # Field names and enum-like values recur in every result; remember the short ones.
        self._short = functools.lru_cache(maxsize=4096)(self._text)

    def text(self, value: str) -> str:
        return self._short(value) if len(value) <= 64 else self._text(value)

    def _text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        folded = value.casefold()
        for triggers, pattern in _SHAPES:
            if any(t in folded for t in triggers):
                value = pattern.sub(MASK, value)
        if len(value) >= 60:
            value = _KEY_BODY_LINE.sub(MASK, value)
        if any(word in folded for word in _KEY_VALUE_WORDS):
            value = _KEY_VALUE.sub(_mask_value, value)
        return value

    def secret_keys(self, value: Any) -> Any:
        """Mask only the values under secret-sounding keys (for data whose text was already redacted)."""
        if isinstance(value, dict):
            return {
                key: (MASK if isinstance(key, str) and _secret_key(key) and item else self.secret_keys(item))
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.secret_keys(item) for item in value]
        return value

    def value(self, value: Any) -> Any:
        """Redact a JSON-like structure; values under secret-sounding keys are masked whole."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                self.value(key): (MASK if isinstance(key, str) and _secret_key(key) and item else self.value(item))
                for key, item in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None




class RedactingFilter(logging.Filter):
    """A logging filter that scrubs the formatted message (args included) of every record."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redactor.text(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later from exc_info; pre-format and scrub them here.
            formatter = logging.Formatter()
            cleaned += "\n" + self.redactor.text(formatter.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = cleaned, None
        return True
