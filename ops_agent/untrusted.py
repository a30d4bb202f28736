"""Text from the world on its way to a model: tool results, peer agents' descriptions, and the words provenance
compares.

- `visible(text)` drops invisible format characters (zero-width, bidi overrides: Unicode category Cf), in
  which an instruction could hide from the people reading the same text.
- `as_data(source, text)` fences text as data (`<data source="...">`); a `</data` inside it is escaped, so
  the text cannot close the fence itself.

Kept apart from the Claude planner so that the offline path, which never loads the Anthropic SDK, shares it.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["as_data", "escape_fence", "visible"]

_FENCE_END = re.compile(r"</(?=\s*data)", re.IGNORECASE)


def visible(text: str) -> str:
    return text if text.isascii() else "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def escape_fence(text: str) -> str:
    """`text` unable to close a `<data>` fence it is put in."""
    return _FENCE_END.sub("<\\/", text)


def as_data(source: str, text: str) -> str:
    """Text from the world, fenced as data: the fence cannot be closed from inside it."""
    return f'<data source="{source}">\n{escape_fence(text)}\n</data>'
