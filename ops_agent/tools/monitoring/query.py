"""A small query language over stored series, for custom metrics and alert conditions.

    avg(response_time_ms{service="api"}[5m]) > 500
    sum(errors[5m]) / sum(requests[5m]) * 100
    cpu_percent > 90
    error_rate > 5%

Grammar (EBNF; whitespace may separate any two tokens)::

    query       = arith [ compare_op arith ] ;       (* at most one comparison, and only at the top *)
    compare_op  = ">" | ">=" | "<" | "<=" | "==" | "!=" ;
    arith       = term { ( "+" | "-" ) term } ;
    term        = unary { ( "*" | "/" ) unary } ;
    unary       = "-" unary | primary ;
    primary     = number | aggregation | selector | "(" arith ")" ;
    aggregation = function "(" selector [ window ] ")" ;   (* no window: the last 5 minutes *)
    function    = "avg" | "min" | "max" | "sum" | "count" | "rate" | "increase" | "last"
                | "p50" | "p90" | "p95" | "p99" ;
    selector    = name [ "{" [ matcher { "," matcher } [ "," ] ] "}" ] ;
    matcher     = label ( "=" | "!=" ) string ;
    window      = "[" duration "]" ;
    duration    = digits unit { digits unit } ;      (* units largest first, each once: 1h30m *)
    unit        = "d" | "h" | "m" | "s" ;
    number      = ( digits [ "." digits ] | "." digits ) [ ( "e" | "E" ) [ "+" | "-" ] digits ] [ "%" ] ;
    name        = ( letter | "_" ) { letter | digit | "_" | ":" | "." } ;    (* ASCII only *)
    label       = ( letter | "_" ) { letter | digit | "_" } ;
    string      = '"' { any character but '"' and '\\' | '\\"' | '\\\\' } '"' ;

A name followed by "(" is a function call; anywhere else it names a series, so a series may be called
`count`. `5%` is the number 5, for readability. Limits: 2000 characters, nesting 50 deep, windows up
to 366 days, names and label values up to 256 characters. Alert conditions (alerts/condition.py and
docs/ALERT_CONDITIONS.md) are this language plus `for`, health, log counts and log anomalies.

Meaning (`evaluate`):

* a bare `selector` is the sum of the latest value of every matching series;
* `f(selector[w])` reads every point of every matching series with `now - w <= ts <= now`:
  avg, min, max, sum and count (of points) over all of them; `last` sums each series' newest point;
  `pNN` is the NN-th percentile of all values, interpolating linearly between the closest ranks;
  `rate` treats each series as a counter: its increase over the window (a drop in value is a restart
  from zero) divided by the seconds between its first and last point, summed over the series (a series
  needs two points at different times); `increase` is `rate * w`;
* `!=` keeps series that lack the label or carry another value; `=` is passed to the source;
* a read that finds no points (so `count` is never 0), arithmetic on no data, division by zero and a
  result that is not a finite number are all *no data* (`Result.no_data`), which is not the same as 0;
  a comparison with no data on either side is no data too, not False. Points whose value is NaN or
  infinite are skipped.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Literal, Protocol

from ops_agent.errors import QueryError

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_NAME_LENGTH",
    "MAX_QUERY_LENGTH",
    "MAX_WINDOW_S",
    "Aggregation",
    "BinaryOp",
    "Comparison",
    "Expr",
    "Matcher",
    "Negate",
    "Number",
    "Point",
    "Query",
    "QueryError",
    "Result",
    "Selector",
    "SeriesSource",
    "compare",
    "compute",
    "describe",
    "describe_expr",
    "evaluate",
    "format_duration",
    "leaves",
    "parse",
    "read_leaf",
]

MAX_QUERY_LENGTH = 2000
MAX_DEPTH = 50  # parentheses, unary minus and operators nested in one another
MAX_WINDOW_S = 366 * 86400
DEFAULT_WINDOW_S = 300  # a function written without a window
MAX_NAME_LENGTH = 256  # series names, label names and label values, as the series store takes them
FUNCTIONS = ("avg", "min", "max", "sum", "count", "rate", "increase", "last", "p50", "p90", "p95", "p99")

Labels = frozenset[tuple[str, str]]


# --- what evaluation reads ------------------------------------------------------------------------


class Point(Protocol):
    @property
    def ts(self) -> float: ...

    @property
    def value(self) -> float: ...


class SeriesSource(Protocol):
    """Stored series, keyed by their full label set. `matchers` are label equalities, all required."""

    async def points(
        self, name: str, matchers: Mapping[str, str], start: float, end: float
    ) -> Mapping[Labels, Sequence[Point]]: ...

    async def latest(self, name: str, matchers: Mapping[str, str]) -> Mapping[Labels, Point]: ...


# --- errors ---------------------------------------------------------------------------------------


# --- the syntax tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    key: str
    op: Literal["=", "!="]
    value: str


@dataclass(frozen=True)
class Selector:
    """A series name and label matchers (sorted, without duplicates). `position` is where it was
    written, for error messages about it (say, an unknown series); it takes no part in equality."""

    name: str
    matchers: tuple[Matcher, ...] = ()
    position: int = field(default=0, compare=False)

    @property
    def equals(self) -> dict[str, str]:
        """The `=` matchers, as the source takes them."""
        return {m.key: m.value for m in self.matchers if m.op == "="}


@dataclass(frozen=True)
class Number:
    value: float
    percent: bool = field(default=False, compare=False)  # written as `5%`; the value is still 5


@dataclass(frozen=True)
class Aggregation:
    function: str
    selector: Selector
    window_s: int


@dataclass(frozen=True)
class Negate:
    operand: Expr


@dataclass(frozen=True)
class BinaryOp:
    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Comparison:
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    left: Expr
    right: Expr


Expr = Number | Selector | Aggregation | Negate | BinaryOp


@dataclass(frozen=True)
class Query:
    expr: Expr | Comparison

    @property
    def is_condition(self) -> bool:
        """True when the query is a comparison (its value is a bool)."""
        return isinstance(self.expr, Comparison)

    def series(self) -> tuple[Selector, ...]:
        """Every selector the query reads, once each, in the order written."""
        selectors = (
            leaf if isinstance(leaf, Selector) else leaf.selector
            for leaf in leaves(self.expr)
            if isinstance(leaf, Selector | Aggregation)
        )
        return tuple(dict.fromkeys(selectors))

    def __str__(self) -> str:
        return describe(self)


# --- tokens ---------------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_:.]*")
_DIGITS = re.compile(r"[0-9]+")
_LETTERS = re.compile(r"[A-Za-z]+")
_STRING_CHUNK = re.compile(r'[^"\\]+')
_NOT_IN_LABEL = re.compile(r"[:.]")
_DIGIT_CHARS = frozenset("0123456789")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDENT_CHARS = _ASCII_LETTERS | frozenset("0123456789_")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_TWO_CHAR_OPS = (">=", "<=", "==", "!=")
_ONE_CHAR_OPS = frozenset("><=()[]{},+-*/")
_COMPARE_OPS = frozenset((">", ">=", "<", "<=", "==", "!="))
_CHAR_HINTS = {
    "!": "unexpected '!'; did you mean '!='?",
    "~": "regex matchers (=~, !~) are not supported; use = or !=",
    "'": "strings take double quotes, as in host=\"web-1\"",
    "%": "'%' can only follow a number, as in 5%",
}

_TokenKind = Literal["name", "number", "duration", "string", "op", "end"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _TokenKind
    text: str  # as written (an operator, a name, ...); "" at the end
    pos: int
    value: float | int | str | None = None

    def shown(self) -> str:
        return "the end of the query" if self.kind == "end" else repr(_clip(self.text))


def _clip(text: str, limit: int = 30) -> str:
    """Some of the caller's text, short enough to quote in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Lexer:
    """Splits the text into tokens on demand, so errors come in the order they are written. Linear:
    every pattern is a simple character class, and each character is looked at a bounded number of times."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int) -> QueryError:
        return QueryError(message, pos, self.text)

    def next(self) -> _Token:
        text, n = self.text, len(self.text)
        i = self.pos
        while i < n and text[i] in " \t\r\n":
            i += 1
        self.pos = i
        if i >= n:
            return _Token("end", "", n)
        c = text[i]
        if c in _DIGIT_CHARS or c == "." and i + 1 < n and text[i + 1] in _DIGIT_CHARS:
            return self._number_or_duration(i)
        if c in _IDENT_CHARS:  # a letter or "_": digits were handled above
            match = _IDENT.match(text, i)
            assert match is not None
            self.pos = match.end()
            return _Token("name", match.group(), i)
        if c == '"':
            return self._string(i)
        two = text[i : i + 2]
        if two in _TWO_CHAR_OPS:
            self.pos = i + 2
            return _Token("op", two, i)
        if c in _ONE_CHAR_OPS:
            self.pos = i + 1
            return _Token("op", c, i)
        raise self.error(_CHAR_HINTS.get(c, f"unexpected character {c!r}"), i)

    def _number_or_duration(self, start: int) -> _Token:
        text, n = self.text, len(self.text)
        digits = _DIGITS.match(text, start)
        i = digits.end() if digits else start
        if digits and i < n and text[i] in _ASCII_LETTERS and text[i] not in "eE":
            return self._window_duration(start)
        if i < n and text[i] == ".":
            fraction = _DIGITS.match(text, i + 1)
            if fraction is None:
                raise self.error("expected digits after the decimal point", i + 1)
            i = fraction.end()
        if i < n and text[i] in "eE":
            j = i + 1 + (text[i + 1 : i + 2] in ("+", "-"))
            exponent = _DIGITS.match(text, j)
            if exponent is None:
                raise self.error("expected the digits of an exponent, as in 1e6", j)
            i = exponent.end()
        written = text[start:i]
        value = float(written)
        if not math.isfinite(value):
            raise self.error("this number is too large", start)
        percent = i < n and text[i] == "%"
        i += percent
        if i < n and text[i] in _IDENT_CHARS:
            if not percent and text[i] in _UNITS and written != text[start : digits.end() if digits else start]:
                raise self.error(
                    f"a duration takes whole numbers: write 90s rather than 1.5m (got {_clip(written)})", start
                )
            raise self.error(f"unexpected {text[i]!r} right after the number {_clip(text[start:i])}", i)
        self.pos = i
        return _Token("number", text[start:i], start, value)

    def _window_duration(self, start: int) -> _Token:
        text, n = self.text, len(self.text)
        i, total, previous = start, 0, None
        while True:
            digits = _DIGITS.match(text, i)
            if digits is None:
                break
            j = digits.end()
            letters = _LETTERS.match(text, j)
            if letters is None:
                raise self.error(f"missing a unit after {_clip(digits.group())}: use s, m, h or d, as in 1h30m", j)
            unit = letters.group()
            if unit not in _UNITS:
                if previous is None:
                    raise self.error(
                        f"{_clip(digits.group() + unit)} is neither a number nor a duration: durations take the unit "
                        "s, m, h or d, as in 5m or 1h30m",
                        start,
                    )
                raise self.error(f"unknown duration unit {_clip(unit)!r}: use s, m, h or d, as in 5m or 1h30m", j)
            if previous is not None and _UNITS[unit] >= _UNITS[previous]:
                raise self.error("duration units go from largest to smallest, each at most once, as in 1h30m", j)
            total += int(digits.group()) * _UNITS[unit]
            previous, i = unit, letters.end()
        if i < n and text[i] in "_:.":
            raise self.error(f"unexpected {text[i]!r} in a duration", i)
        self.pos = i
        return _Token("duration", text[start:i], start, total)

    def _string(self, start: int) -> _Token:
        text, n = self.text, len(self.text)
        parts: list[str] = []
        i = start + 1
        while True:
            chunk = _STRING_CHUNK.match(text, i)
            if chunk:
                parts.append(chunk.group())
                i = chunk.end()
            if i >= n:
                raise self.error('unterminated string: add the closing "', start)
            if text[i] == '"':
                self.pos = i + 1
                return _Token("string", text[start : i + 1], start, "".join(parts))
            escaped = text[i + 1 : i + 2]  # text[i] is a backslash
            if escaped == "":
                raise self.error('unterminated string: add the closing "', start)
            if escaped not in ('"', "\\"):
                raise self.error(f'unsupported escape \\{escaped} in a string; only \\" and \\\\ are allowed', i)
            parts.append(escaped)
            i += 2


# --- parser ---------------------------------------------------------------------------------------

_EXPECTED = "a number, a series or a function call"


class _Parser:
    """Recursive descent, one token of lookahead. Each method returns (node, height) where height counts
    the operators, parentheses and minus signs inside the node; `depth` counts those around it.
    depth + height never exceeds MAX_DEPTH, which bounds recursion here and in describe/evaluate."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lexer = _Lexer(text)
        self.previous: _Token | None = None
        self.tok = self.lexer.next()

    def error(self, message: str, pos: int) -> QueryError:
        return QueryError(message, pos, self.text)

    def advance(self) -> _Token:
        self.previous, self.tok = self.tok, self.lexer.next()
        return self.previous

    def at(self, op: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == op

    def nest(self, depth: int, height: int, pos: int) -> None:
        if depth + height > MAX_DEPTH:
            raise self.error(
                f"the query is nested too deeply: at most {MAX_DEPTH} levels of operators, parentheses "
                "and minus signs; split it into simpler metrics",
                pos,
            )

    def query(self) -> Query:
        if self.tok.kind == "end":
            raise self.error("empty query: write an expression such as avg(cpu_percent[5m]) > 90", self.tok.pos)
        left, _ = self.arith(0)
        if self.tok.kind == "op" and self.tok.text in _COMPARE_OPS:
            op = self.advance()
            right, _ = self.arith(0)
            if self.tok.kind == "op" and self.tok.text in _COMPARE_OPS:
                raise self.error("only one comparison is allowed in a query", self.tok.pos)
            return self.finish(Query(Comparison(op.text, left, right)))  # type: ignore[arg-type]
        return self.finish(Query(left))

    def finish(self, query: Query) -> Query:
        if self.tok.kind == "end":
            return query
        if self.at("="):
            raise self.error("use '==' to compare; '=' only matches labels inside {...}", self.tok.pos)
        if self.at(")"):
            raise self.error("this ')' has no matching '('", self.tok.pos)
        raise self.error(
            f"unexpected {self.tok.shown()} after a complete expression; join expressions with an operator "
            "such as + or >",
            self.tok.pos,
        )

    def arith(self, depth: int) -> tuple[Expr, int]:
        return self.chain(depth, ("+", "-"), self.term)

    def term(self, depth: int) -> tuple[Expr, int]:
        return self.chain(depth, ("*", "/"), self.unary)

    def chain(
        self, depth: int, operators: tuple[str, ...], operand: Callable[[int], tuple[Expr, int]]
    ) -> tuple[Expr, int]:
        """operand { operator operand }, left-associative; the height of the tree counts toward nesting."""
        node, height = operand(depth)
        while any(self.at(op) for op in operators):
            op = self.advance()
            right, right_height = operand(depth)
            height = max(height, right_height) + 1
            self.nest(depth, height, op.pos)
            node = BinaryOp(op.text, node, right)  # type: ignore[arg-type]
        return node, height

    def unary(self, depth: int) -> tuple[Expr, int]:
        if self.at("-"):
            minus = self.advance()
            self.nest(depth, 1, minus.pos)
            operand, height = self.unary(depth + 1)
            return Negate(operand), height + 1
        return self.primary(depth)

    def primary(self, depth: int) -> tuple[Expr, int]:
        tok = self.tok
        if tok.kind == "number":
            self.advance()
            assert isinstance(tok.value, float)
            return Number(tok.value, percent=tok.text.endswith("%")), 0
        if self.at("("):
            self.advance()
            self.nest(depth, 1, tok.pos)
            inner, height = self.arith(depth + 1)
            if self.tok.kind == "op" and self.tok.text in _COMPARE_OPS:
                raise self.error(
                    "a comparison can only be the outermost operation, as in avg(x[5m]) > 90; "
                    "it cannot sit inside parentheses",
                    self.tok.pos,
                )
            self.close(")", tok)
            return inner, height + 1
        if tok.kind == "name":
            self.advance()
            if self.at("("):
                return self.call(tok), 0
            selector = self.selector(tok)
            if self.at("["):
                raise self.error(
                    f"a window needs a function around it, as in avg({_clip(describe_expr(selector))}[5m]); "
                    f"a bare {_clip(tok.text)} means its latest value",
                    self.tok.pos,
                )
            return selector, 0
        if tok.kind == "duration":
            duration = _clip(tok.text)
            raise self.error(f"a duration such as {duration} only goes in a window, as in avg(x[{duration}])", tok.pos)
        if tok.kind == "string":
            raise self.error('a string can only be a label value, as in x{host="web-1"}', tok.pos)
        after = f" after {_clip(self.previous.text)!r}" if self.previous is not None else ""
        raise self.error(f"expected {_EXPECTED}{after}, found {tok.shown()}", tok.pos)

    def close(self, closer: str, opener: _Token) -> None:
        if not self.at(closer):
            raise self.error(
                f"expected {closer!r} to close the {opener.text!r} at position {opener.pos}, found {self.tok.shown()}",
                self.tok.pos,
            )
        self.advance()

    def call(self, name: _Token) -> Expr:
        """`name(` was read (the current token is the "("). A subclass may add functions here whose
        nodes are leaves of their own (alerts/condition.py adds log_count): `leaves` and `compute` treat
        any node that is not a number or an operator as a leaf, and `describe_expr` prints it with str()."""
        return self.aggregation(name)

    def aggregation(self, name: _Token) -> Aggregation:
        function = name.text
        if function not in FUNCTIONS:
            hint = f"did you mean {function.lower()!r}? " if function.lower() in FUNCTIONS else ""
            raise self.error(
                f"unknown function {_clip(function)!r}; {hint}known functions: {', '.join(FUNCTIONS)}", name.pos
            )
        opener = self.advance()
        example = f"{function}(cpu_percent[5m])"
        if self.tok.kind != "name":
            raise self.error(f"{function}( takes a series and a window, as in {example}", self.tok.pos)
        series = self.advance()
        if self.at("("):
            raise self.error(f"functions do not nest: {function}( takes a series, as in {example}", series.pos)
        selector = self.selector(series)
        # The seed writes avg(response_time): without a window, a function covers the last 5 minutes.
        window_s = self.window() if self.at("[") else DEFAULT_WINDOW_S
        self.close(")", opener)
        return Aggregation(function, selector, window_s)

    def window(self) -> int:
        opener = self.advance()
        tok = self.tok
        if tok.kind == "number":
            raise self.error(f"a window needs a unit: s, m, h or d, as in [{_clip(tok.text)}m]", tok.pos)
        if tok.kind != "duration":
            raise self.error(f"expected a duration such as 5m, 1h or 1h30m, found {tok.shown()}", tok.pos)
        assert isinstance(tok.value, int)
        if tok.value == 0:
            raise self.error("a window must be longer than zero", tok.pos)
        if tok.value > MAX_WINDOW_S:
            raise self.error(f"a window can be at most {format_duration(MAX_WINDOW_S)}", tok.pos)
        self.advance()
        self.close("]", opener)
        return tok.value

    def checked_length(self, tok: _Token, what: str, length: int) -> None:
        if length > MAX_NAME_LENGTH:
            raise self.error(f"{what} is {length} characters long; at most {MAX_NAME_LENGTH} are allowed", tok.pos)

    def selector(self, name: _Token) -> Selector:
        self.checked_length(name, "this series name", len(name.text))
        matchers: list[Matcher] = []
        if self.at("{"):
            opener = self.advance()
            equal: set[str] = set()
            while not self.at("}"):
                if self.tok.kind == "end":
                    raise self.error(f"missing '}}' to close the '{{' at position {opener.pos}", self.tok.pos)
                if self.tok.kind != "name":
                    raise self.error(f"expected a label name, found {self.tok.shown()}", self.tok.pos)
                key = self.advance()
                self.checked_length(key, "this label name", len(key.text))
                odd = _NOT_IN_LABEL.search(key.text)
                if odd:
                    raise self.error(
                        f"label names use letters, digits and '_' only, not {odd.group()!r}", key.pos + odd.start()
                    )
                if self.at("=="):
                    raise self.error("label matchers use a single '=' (or '!=')", self.tok.pos)
                if not (self.at("=") or self.at("!=")):
                    raise self.error(f"expected '=' or '!=' after the label {_clip(key.text)}", self.tok.pos)
                op = self.advance()
                if self.tok.kind != "string":
                    example = f'{_clip(key.text)}{op.text}"web-1"'
                    raise self.error(f"label values are double-quoted strings, as in {example}", self.tok.pos)
                value = self.advance()
                assert isinstance(value.value, str)
                self.checked_length(value, "this label value", len(value.value))
                if op.text == "=":
                    if key.text in equal:
                        raise self.error(f"the label {_clip(key.text)} is matched with '=' twice", key.pos)
                    equal.add(key.text)
                matchers.append(Matcher(key.text, op.text, value.value))  # type: ignore[arg-type]
                if self.at(","):
                    self.advance()
                elif not self.at("}"):
                    if self.tok.kind == "end":
                        raise self.error(f"missing '}}' to close the '{{' at position {opener.pos}", self.tok.pos)
                    found = self.tok.shown()
                    raise self.error(f"expected ',' or '}}' after a label matcher, found {found}", self.tok.pos)
            self.advance()
        unique = sorted(set(matchers), key=lambda m: (m.key, m.op, m.value))
        return Selector(name.text, tuple(unique), position=name.pos)


def parse(text: str) -> Query:
    """Parse a query. Raises QueryError naming the first problem and where it is."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(
            f"the query is too long: {len(text)} characters, the limit is {MAX_QUERY_LENGTH}", MAX_QUERY_LENGTH, text
        )
    return _Parser(text).query()


# --- canonical form -------------------------------------------------------------------------------

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def describe(query: Query) -> str:
    """The canonical text of a query: parse(describe(q)) == q."""
    expr = query.expr
    if isinstance(expr, Comparison):
        return f"{describe_expr(expr.left)} {expr.op} {describe_expr(expr.right)}"
    return describe_expr(expr)


def describe_expr(expr: Expr) -> str:
    if isinstance(expr, Number):
        value = float(expr.value)
        text = str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
        return text + ("%" if expr.percent else "")
    if isinstance(expr, Selector):
        if not expr.matchers:
            return expr.name
        inner = ", ".join(f"{m.key}{m.op}{_quote(m.value)}" for m in expr.matchers)
        return f"{expr.name}{{{inner}}}"
    if isinstance(expr, Aggregation):
        return f"{expr.function}({describe_expr(expr.selector)}[{format_duration(expr.window_s)}])"
    if not isinstance(expr, Negate | BinaryOp):
        return str(expr)  # a leaf added by an extension of the parser (see _Parser.call)
    if isinstance(expr, Negate):
        operand = describe_expr(expr.operand)
        return f"-({operand})" if isinstance(expr.operand, BinaryOp) else f"-{operand}"
    precedence = _PRECEDENCE[expr.op]
    left, right = describe_expr(expr.left), describe_expr(expr.right)
    if isinstance(expr.left, BinaryOp) and _PRECEDENCE[expr.left.op] < precedence:
        left = f"({left})"
    if isinstance(expr.right, BinaryOp) and _PRECEDENCE[expr.right.op] <= precedence:
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_duration(seconds: int) -> str:
    """Whole seconds as the language writes them, largest unit first: 5400 -> "1h30m"."""
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """A query's value: a number, a bool for a comparison, or None when there was no data to judge by."""

    value: float | bool | None
    no_data: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "no_data", self.value is None)


def leaves(expr: Expr | Comparison) -> list[Expr]:
    """The nodes whose values are read rather than computed (selectors, aggregations and any leaf an
    extension adds), in the order written, repeats included."""
    if isinstance(expr, Number):
        return []
    if isinstance(expr, Negate):
        return leaves(expr.operand)
    if isinstance(expr, BinaryOp | Comparison):
        return leaves(expr.left) + leaves(expr.right)
    return [expr]


async def evaluate(query: Query, source: SeriesSource, now: float) -> Result:
    """The query's value at `now` (epoch seconds). Each distinct read is made once, all at the same time;
    an error from the source propagates unchanged."""
    reads = list(dict.fromkeys(leaves(query.expr)))
    fetched = await asyncio.gather(
        *(read_leaf(leaf, source, now) for leaf in reads),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    for outcome in fetched:
        if isinstance(outcome, BaseException):
            raise outcome
    values: dict[Expr, float | None] = dict(zip(reads, fetched, strict=True))  # type: ignore
    expr = query.expr
    if isinstance(expr, Comparison):
        left, right = compute(expr.left, values), compute(expr.right, values)
        if left is None or right is None:
            return Result(None)
        return Result(compare(expr.op, left, right))
    return Result(compute(expr, values))


def compare(op: str, left: float, right: float) -> bool:
    """`left op right` for one of the six comparison operators."""
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == "==":
        return left == right
    return left != right


def compute(expr: Expr, values: Mapping[Expr, float | None]) -> float | None:
    """The value of `expr` given the values already read for its leaves (see `leaves`); None is no data."""
    if isinstance(expr, Number):
        return expr.value
    if not isinstance(expr, Negate | BinaryOp):
        return values[expr]
    if isinstance(expr, Negate):
        operand = compute(expr.operand, values)
        return None if operand is None else -operand
    left, right = compute(expr.left, values), compute(expr.right, values)
    if left is None or right is None:
        return None
    if expr.op == "+":
        result = left + right
    elif expr.op == "-":
        result = left - right
    elif expr.op == "*":
        result = left * right
    elif right == 0:
        return None
    else:
        result = left / right
    return result if math.isfinite(result) else None


def _kept(labels: Labels, selector: Selector) -> bool:
    """The `!=` matchers, which the source does not apply."""
    present = dict(labels)
    return all(present.get(m.key) != m.value for m in selector.matchers if m.op == "!=")


async def read_leaf(leaf: Selector | Aggregation, source: SeriesSource, now: float) -> float | None:
    """The value of one selector or aggregation at `now`, or None for no data."""
    if isinstance(leaf, Selector):
        latest = await source.latest(leaf.name, leaf.equals)
        values = [p.value for labels, p in latest.items() if _kept(labels, leaf) and math.isfinite(p.value)]
        total = _total(values)
        return total if values and math.isfinite(total) else None
    selector = leaf.selector
    start = now - leaf.window_s
    found = await source.points(selector.name, selector.equals, start, now)
    series = [
        sorted((p for p in points if start <= p.ts <= now and math.isfinite(p.value)), key=attrgetter("ts"))
        for labels, points in found.items()
        if _kept(labels, selector)
    ]
    return _aggregate(leaf.function, [s for s in series if s], leaf.window_s)


def _aggregate(function: str, series: list[list[Point]], window_s: int) -> float | None:
    values = [p.value for points in series for p in points]
    if not values:
        return None
    if function in ("rate", "increase"):
        rates = [rate for rate in map(_rate, series) if rate is not None]
        if not rates:
            return None
        result = _total(rates) * (1 if function == "rate" else window_s)
    elif function == "avg":
        result = _total(value / len(values) for value in values)
    elif function == "sum":
        result = _total(values)
    elif function == "min":
        result = min(values)
    elif function == "max":
        result = max(values)
    elif function == "count":
        result = float(len(values))
    elif function == "last":
        result = _total(points[-1].value for points in series)
    else:
        result = _percentile(sorted(values), int(function[1:]))
    return result if math.isfinite(result) else None


def _total(values: Iterable[float]) -> float:
    """An exact sum, or NaN when it overflows (which the callers report as no data)."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return math.nan


def _rate(points: list[Point]) -> float | None:
    """Per-second increase of a counter over its points; a drop means it restarted from zero."""
    if len(points) < 2:
        return None
    elapsed = points[-1].ts - points[0].ts
    if elapsed <= 0:
        return None
    increase = 0.0
    previous = points[0].value
    for point in points[1:]:
        increase += point.value - previous if point.value >= previous else point.value
        previous = point.value
    return increase / elapsed


def _percentile(ordered: list[float], percent: int) -> float:
    rank = percent / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    weight = rank - low
    return ordered[low] if weight == 0 else ordered[low] * (1 - weight) + ordered[high] * weight
