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

_SECRET_KEY = re.compile(r"(pass(word|wd)?|secret|token(?!s)|api[_-]?key|authorization|credential|private[_-]?key)", re.I)
_PATTERNS = [
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),  # Anthropic, OpenAI
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),  # GitHub
    re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),  # Google API keys
    re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"),
    re.compile(r"\bSG\.[\w-]{16,}\.[\w-]{16,}"),  # SendGrid
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+"),  # JWTs
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"),  # [user]:password@ in URLs
    # A whole PEM key; or, in a log cut into lines, its first line to the end and its 64-column body lines.
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|.*)"),
    re.compile(r"(?<![^\n])[A-Za-z0-9+/]{64}(?![^\n])"),
]
# key=value, key: value, "key": "value" where the key sounds secret; the key stays readable.
_KEY_VALUE = re.compile(
    r"(?i)((?:password|passwd|pwd|secret|token(?!s)|api[_-]?key|access[_-]?key|session[_-]?(?:id|token)|"
    r"credentials?)[A-Za-z_-]*[\"']?\s*[=:]\s*[\"']?)[^\s,;&\"'}]+"
)


class Redactor:
    """Replaces known secret values and secret-shaped substrings with MASK."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret that contains another is masked whole; very short values would mask noise.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        # One search tells whether there is anything to do; most strings are clean.
        alternatives = [re.escape(s) for s in self._secrets] + [_scoped(p.pattern) for p in (*_PATTERNS, _KEY_VALUE)]
        self._any = re.compile("|".join(alternatives))

        # Field names and enum-like values recur in every result; remember the short ones.
        self._short = functools.lru_cache(maxsize=4096)(self._text)

    def text(self, value: str) -> str:
        return self._short(value) if len(value) <= 64 else self._text(value)

    def _text(self, value: str) -> str:
        if not self._any.search(value):
            return value
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        for pattern in _PATTERNS:
            value = pattern.sub(MASK, value)
        return _KEY_VALUE.sub(lambda m: m.group(1) + MASK, value)

    def value(self, value: Any) -> Any:
        """Redact a JSON-like structure; values under secret-sounding keys are masked whole."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                self.value(key): (MASK if isinstance(key, str) and _SECRET_KEY.search(key) and item else self.value(item))
                for key, item in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value


def _scoped(pattern: str) -> str:
    """A pattern as one alternative of a larger one: its leading global flag becomes a scoped one."""
    return f"(?i:{pattern[4:]})" if pattern.startswith("(?i)") else f"(?:{pattern})"


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
