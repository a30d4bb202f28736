"""Redis replies as text: a client may or may not decode responses, so whatever reads stream entries and
string values goes through these two."""

from __future__ import annotations

from typing import Any

__all__ = ["as_fields", "as_text"]


def as_text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def as_fields(raw: dict) -> dict[str, str]:
    """A stream entry's fields, keys and values as text."""
    return {as_text(key): as_text(value) for key, value in raw.items()}
