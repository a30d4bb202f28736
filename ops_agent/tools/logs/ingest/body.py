"""Request bodies of log deliveries: a JSON array, or NDJSON (one JSON value a line). One reading of each,
shared by every endpoint, with errors that name the line and never crash on hostile input."""

from __future__ import annotations

import json
from typing import Any

from ops_agent.errors import ToolRetry

__all__ = ["json_array", "json_lines"]


def json_array(text: str) -> list[Any]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolRetry(f"body: not a JSON array ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ToolRetry("body: not a JSON array (nested too deeply)") from None
    if not isinstance(items, list):
        raise ToolRetry("body: expected a JSON array")
    return items


def json_lines(text: str) -> list[Any]:
    """Only \\n ends a line: JSON may hold U+2028 and other line separators raw."""
    items = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ToolRetry(f"body: line {number} is not JSON ({exc.msg})") from None
        except RecursionError:
            raise ToolRetry(f"body: line {number} is nested too deeply") from None
    return items
