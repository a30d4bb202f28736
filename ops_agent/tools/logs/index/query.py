"""The log search language, time ranges and severity thresholds: parsed once, compiled by each store.

    error timeout                    both terms (AND is implied; `AND` may be written)
    "connection refused"             a phrase
    conn*                            a prefix
    service:api  host:web-1          the record's own fields (exact)
    severity:warning                 a threshold: warning and above
    status:500  status:>=500         an attribute (numbers compare as numbers)
    NOT healthcheck  -healthcheck    negation
    timeout OR refused               either; AND binds tighter than OR; parentheses group

Malformed input raises QueryError naming the position and what was expected, never a store's message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ops_agent.errors import QueryError, ToolRetry
from ops_agent.tools.logs.record import SEVERITIES, normalize_severity

__all__ = [
    "And",
    "Field",
    "Node",
    "Not",
    "Or",
    "Text",
    "is_text_only",
    "parse_query",
    "parse_severity",
    "parse_time_range",
]

RECORD_FIELDS = ("service", "host", "severity")
MAX_TOKENS = 100
MAX_DEPTH = 12
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_OPERATORS = (">=", "<=", ">", "<", "=")


@dataclass(frozen=True, slots=True)
class Text:
    """A term, a phrase (several words in order) or a prefix, matched against message and attributes."""

    words: str
    phrase: bool = False
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # a record field (service, host, severity) or an attribute name
    value: str
    operator: str = "="  # one of _OPERATORS; ordering operators compare numbers


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


Node = Text | Field | Not | And | Or


def is_text_only(node: Node) -> bool:
    """True when the whole subtree is full-text (and so one full-text expression can answer it)."""
    match node:
        case Text():
            return True
        case Not(inner):
            return is_text_only(inner)
        case And(nodes) | Or(nodes):
            return all(is_text_only(n) for n in nodes)
    return False


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<phrase>"(?:[^"\\]|\\.)*"?) |
        (?P<word>[^\s()"]+)
    )""",
    re.VERBOSE,
)
_FIELD = re.compile(r"^(?P<name>[A-Za-z_][\w.-]*):(?P<rest>.*)$")
# Characters that make a word: FTS tokenizers split on everything else, so a bare word of only
# punctuation matches nothing and is refused rather than silently matching everything.
_WORDLIKE = re.compile(r"\w")


def parse_query(text: str) -> Node | None:
    """Parse `text`; None means "every record" (an empty query)."""
    if len(text) > 2000:
        raise QueryError("query: longer than 2000 characters", 2000)
    if control := _CONTROL.search(text):
        raise QueryError("query: control characters (such as NUL) are not allowed", control.start(), text)
    tokens = _tokenize(text)
    if not tokens:
        return None
    if len(tokens) > MAX_TOKENS:
        raise QueryError(f"query: more than {MAX_TOKENS} terms and operators", tokens[MAX_TOKENS][2], text)
    parser = _Parser(tokens, text)
    node = parser.parse_or()
    if parser.peek() is not None:
        kind, value, position = parser.tokens[parser.index]
        raise QueryError(f"query: unexpected {value!r}", position, text)
    if _depth(node) > MAX_DEPTH:  # the databases' own parsers give up on deeper expressions
        raise QueryError(f"query: nested more than {MAX_DEPTH} levels (NOT and parentheses)", 0, text)
    return node


def _depth(node: Node) -> int:
    match node:
        case Not(inner):
            return 1 + _depth(inner)
        case And(nodes) | Or(nodes):
            return 1 + max(_depth(n) for n in nodes)
    return 1


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        kind = match.lastgroup
        if kind is None:
            continue
        value = match.group(kind)
        start = match.start(kind)
        if kind == "phrase" and (len(value) < 2 or not value.endswith('"') or value.endswith('\\"')):
            raise QueryError("query: unclosed quote", start, text)
        tokens.append((kind, value, start))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], text: str) -> None:
        self.tokens = tokens
        self.index = 0
        self.text = text
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        if self.index >= len(self.tokens):
            return None
        kind, value, _ = self.tokens[self.index]
        return kind, value

    def position(self) -> int:
        return self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.text)

    def parse_or(self) -> Node:
        nodes = [self.parse_and()]
        while self.peek() == ("word", "OR"):
            self.index += 1
            nodes.append(self.parse_and())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def parse_and(self) -> Node:
        nodes = [self.parse_unary()]
        while (token := self.peek()) is not None and token != ("word", "OR") and token[0] != "rparen":
            if token == ("word", "AND"):
                self.index += 1
            nodes.append(self.parse_unary())
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def parse_unary(self) -> Node:
        token = self.peek()
        if token == ("word", "NOT"):
            self.index += 1
            return Not(self.parse_unary())
        if token == ("word", "-") and self.index + 1 < len(self.tokens):  # -"a phrase", -(a OR b)
            self.index += 1
            return Not(self.parse_atom())
        if token is not None and token[0] == "word" and token[1].startswith("-") and len(token[1]) > 1:
            kind, value, position = self.tokens[self.index]
            self.tokens[self.index] = (kind, value[1:], position + 1)
            return Not(self.parse_atom())
        return self.parse_atom()

    def parse_atom(self) -> Node:
        token = self.peek()
        position = self.position()
        if token is None:
            raise QueryError("query: expected a term, found the end", position, self.text)
        kind, value = token
        if kind == "rparen":
            raise QueryError("query: unexpected ')'", position, self.text)
        if value in ("AND", "OR") and kind == "word":
            raise QueryError(f"query: expected a term before {value}", position, self.text)
        self.index += 1
        if kind == "lparen":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError("query: parentheses nested too deep", position, self.text)
            node = self.parse_or()
            if self.peek() != ("rparen", ")"):
                raise QueryError("query: missing ')' for the '('", position, self.text)
            self.index += 1
            self.depth -= 1
            return node
        if kind == "phrase":
            words = value[1:-1].replace('\\"', '"')
            if not _WORDLIKE.search(words):
                raise QueryError("query: empty phrase", position, self.text)
            return Text(words, phrase=True)
        if field := _FIELD.match(value):
            return self._field(field.group("name"), field.group("rest"), position)
        prefix = value.endswith("*")
        words = value.rstrip("*")
        if not _WORDLIKE.search(words):
            raise QueryError(f"query: {value!r} has no letters or digits", position, self.text)
        return Text(words, prefix=prefix)

    def _field(self, name: str, rest: str, position: int) -> Node:
        if not rest and self.peek() is not None and self.peek()[0] == "phrase":  # type: ignore[index]
            rest = self.tokens[self.index][1][1:-1]
            self.index += 1
        operator = next((op for op in _OPERATORS if rest.startswith(op)), "=")
        value = rest[len(operator) :] if rest.startswith(operator) else rest
        if not value:
            raise QueryError(f"query: field {name!r} has no value", position, self.text)
        if name in ("severity", "level"):
            if operator not in ("=", ">="):
                raise QueryError(
                    f"query: severity takes a level (a threshold), not {operator!r}", position, self.text
                )
            return Field("severity", parse_severity(value))
        if operator in (">", ">=", "<", "<=") and _number(value) is None:
            raise QueryError(f"query: {name}{operator} needs a number, got {value!r}", position, self.text)
        return Field(name, value, operator)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def parse_severity(value: str) -> str:
    """A severity threshold by name ("error" includes "critical"); refuses unknown names."""
    level = normalize_severity(value, default="")
    if not level:
        raise ToolRetry(f"severity: {value!r} is not one of {', '.join(SEVERITIES)}")
    return level


MAX_SPAN_S = 3650 * 86400
EARLIEST, LATEST = 0.0, 4_102_444_800.0  # the times the index holds: 1970-01-01 .. 2100-01-01
_RELATIVE = re.compile(r"^\s*(?:last\s+|past\s+)?(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time_range(value: str | None, *, now: float) -> tuple[float | None, float]:
    """`15m`, `1h`, `24h`, `7d` (ending now), or ISO bounds `START..END` / `START/END` (END may be empty).

    Returns (start, end) in Unix seconds; start is None for "all time" (None or "all")."""
    if value is None or value.strip().lower() in ("", "all"):
        return None, now
    if match := _RELATIVE.match(value):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
        if seconds <= 0:
            raise ToolRetry(f"time_range: {value!r} is empty; give a positive length such as 15m or 24h")
        if seconds > MAX_SPAN_S:
            raise ToolRetry(f"time_range: {value!r} is longer than 10 years; use all for everything")
        return now - seconds, now
    separator = ".." if ".." in value else "/" if "/" in value else None
    if separator is None:
        try:
            _iso(value)
        except ValueError:
            raise ToolRetry(
                f"time_range: {value!r} is neither a length (15m, 1h, 24h, 7d) nor ISO bounds (START..END)"
            ) from None
        value += ".."  # a lone ISO time is a start: checked below as START.. is
        separator = ".."
    start_text, end_text = (part.strip() for part in value.split(separator, 1))
    try:
        start = _iso(start_text) if start_text else None
        end = _iso(end_text) if end_text else now
    except ValueError as exc:
        raise ToolRetry(f"time_range: {exc}") from None
    for bound, text in ((start, start_text), (end, end_text)):
        if bound is not None and not EARLIEST <= bound <= LATEST:
            raise ToolRetry(f"time_range: {text} is outside 1970..2100")
    if start is not None and start >= end:
        raise ToolRetry(f"time_range: start {start_text} is not before end {end_text or 'now'}")
    return start, end


def _iso(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time such as 2026-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # no zone given: UTC, as everywhere in the index
    return moment.timestamp()
