"""The metric query language: parsing, errors that point at the problem, canonical form, evaluation.

Evaluation reads from `DictSource`, a small SeriesSource over a dict of hand-written points: test data
in the shape the series store returns, so every expected value below can be checked by hand."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from ops_agent.errors import ToolRetry
from ops_agent.tools.monitoring.query import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_QUERY_LENGTH,
    Aggregation,
    BinaryOp,
    Comparison,
    Expr,
    Matcher,
    Negate,
    Number,
    Query,
    QueryError,
    Result,
    Selector,
    describe,
    evaluate,
    parse,
)

NOW = 1_000_000.0


# --- test data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class P:
    ts: float
    value: float


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


class DictSource:
    """Series as {name: {labels: [points]}}; applies `=` matchers and the time range like a store would."""

    def __init__(self, data: Mapping[str, Mapping[frozenset[tuple[str, str]], list[P]]]) -> None:
        self.data = data
        self.reads: list[tuple[str, str, dict[str, str]]] = []

    def _matching(self, name: str, matchers: Mapping[str, str]):
        for key, points in self.data.get(name, {}).items():
            if all((k, v) in key for k, v in matchers.items()):
                yield key, points

    async def points(self, name: str, matchers: Mapping[str, str], start: float, end: float):
        self.reads.append(("points", name, dict(matchers)))
        return {key: [p for p in points if start <= p.ts <= end] for key, points in self._matching(name, matchers)}

    async def latest(self, name: str, matchers: Mapping[str, str]):
        self.reads.append(("latest", name, dict(matchers)))
        return {key: max(points, key=lambda p: p.ts) for key, points in self._matching(name, matchers) if points}


def ago(*pairs: tuple[float, float]) -> list[P]:
    """Points given as (seconds before NOW, value)."""
    return [P(NOW - age, value) for age, value in pairs]


def sel(name: str, *matchers: tuple[str, str, str]) -> Selector:
    return Selector(name, tuple(Matcher(k, op, v) for k, op, v in matchers))  # type: ignore[arg-type]


def n(value: float) -> Number:
    return Number(value)


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expr"),
    [
        ("42", n(42)),
        ("2.5", n(2.5)),
        (".5", n(0.5)),
        ("1e3", n(1000)),
        ("1.5E-2", n(0.015)),
        ("5%", n(5)),
        ("cpu_percent", sel("cpu_percent")),
        ("http.requests:total", sel("http.requests:total")),
        ("count", sel("count")),  # a function's name, not followed by "(", is a series
        ("cpu{}", sel("cpu")),
        ('cpu{host="web-1"}', sel("cpu", ("host", "=", "web-1"))),
        ('cpu{host!="web-1"}', sel("cpu", ("host", "!=", "web-1"))),
        ('cpu{ z = "1" , a="2", }', sel("cpu", ("a", "=", "2"), ("z", "=", "1"))),  # sorted, trailing comma
        ('cpu{a!="x", a!="x"}', sel("cpu", ("a", "!=", "x"))),  # an identical matcher once
        (r'cpu{path="C:\\tmp", q="say \"hi\""}', sel("cpu", ("path", "=", "C:\\tmp"), ("q", "=", 'say "hi"'))),
        ('cpu{a="", b="{}[](),=é"}', sel("cpu", ("a", "=", ""), ("b", "=", "{}[](),=é"))),
        ("avg(cpu[5m])", Aggregation("avg", sel("cpu"), 300)),
        ("avg (cpu [ 5m ] )", Aggregation("avg", sel("cpu"), 300)),
        (
            'rate(requests_total{service="api"}[1h30m])',
            Aggregation("rate", sel("requests_total", ("service", "=", "api")), 5400),
        ),
        ("max(x[1d2h3m4s])", Aggregation("max", sel("x"), 86400 + 7200 + 180 + 4)),
        ("sum(x[90s])", Aggregation("sum", sel("x"), 90)),
        ("-x", Negate(sel("x"))),
        ("--x", Negate(Negate(sel("x")))),
        ("(x)", sel("x")),
        ("1 + 2 * 3", BinaryOp("+", n(1), BinaryOp("*", n(2), n(3)))),
        ("(1 + 2) * 3", BinaryOp("*", BinaryOp("+", n(1), n(2)), n(3))),
        ("1 - 2 - 3", BinaryOp("-", BinaryOp("-", n(1), n(2)), n(3))),
        ("1 - (2 - 3)", BinaryOp("-", n(1), BinaryOp("-", n(2), n(3)))),
        ("8 / 4 / 2", BinaryOp("/", BinaryOp("/", n(8), n(4)), n(2))),
        ("-a * b", BinaryOp("*", Negate(sel("a")), sel("b"))),
        ("-(a * b)", Negate(BinaryOp("*", sel("a"), sel("b")))),
        ("a - -b", BinaryOp("-", sel("a"), Negate(sel("b")))),
        ("errors / requests * 100", BinaryOp("*", BinaryOp("/", sel("errors"), sel("requests")), n(100))),
        (
            "a+b*c-d/e",
            BinaryOp("-", BinaryOp("+", sel("a"), BinaryOp("*", sel("b"), sel("c"))), BinaryOp("/", sel("d"), sel("e"))),
        ),
    ],
)
def test_parses_every_construct(text: str, expr: Expr) -> None:
    assert parse(text) == Query(expr)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_takes_a_selector_and_a_window(function: str) -> None:
    query = parse(f'{function}(latency_ms{{route="/"}}[10m])')
    assert query.expr == Aggregation(function, sel("latency_ms", ("route", "=", "/")), 600)
    assert describe(query) == f'{function}(latency_ms{{route="/"}}[10m])'


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!="])
def test_comparisons_sit_at_the_top_and_bind_loosest(op: str) -> None:
    query = parse(f"avg(response_time_ms[5m]) * 2 {op} 500 + 1")
    assert query.is_condition
    assert query.expr == Comparison(
        op,  # type: ignore[arg-type]
        BinaryOp("*", Aggregation("avg", sel("response_time_ms"), 300), n(2)),
        BinaryOp("+", n(500), n(1)),
    )


def test_the_alert_examples_parse() -> None:
    assert parse("cpu_percent > 90").expr == Comparison(">", sel("cpu_percent"), n(90))
    assert parse("error_rate > 5%") == parse("error_rate > 5")
    assert not parse("errors / requests * 100").is_condition


def test_percent_is_the_number_itself_and_survives_describe() -> None:
    query = parse("error_rate >= 5.5%")
    assert query.expr == Comparison(">=", sel("error_rate"), n(5.5))
    assert describe(query) == "error_rate >= 5.5%"


def test_series_lists_each_selector_once_in_order_with_its_position() -> None:
    query = parse(
        'sum(errors{svc="api"}[5m]) / sum(requests[5m]) + errors{svc="api"} - last(errors{svc="api"}[1m]) > 1'
    )
    series = query.series()
    assert series == (sel("errors", ("svc", "=", "api")), sel("requests"))
    assert [s.position for s in series] == [4, 33]
    assert series[0].equals == {"svc": "api"}
    assert parse("1 + 2").series() == ()


def test_a_selector_position_points_at_its_name() -> None:
    text = "avg(cpu[5m]) + mem"
    query = parse(text)
    assert [text[s.position :].split("[")[0] for s in query.series()] == ["cpu", "mem"]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("avg( cpu [5m] )>90", "avg(cpu[5m]) > 90"),
        ('x{b="2",a="1"}', 'x{a="1", b="2"}'),
        ("sum(x[90s])", "sum(x[1m30s])"),
        ("sum(x[60m])", "sum(x[1h])"),
        ("sum(x[48h])", "sum(x[2d])"),
        ("((a + b)) * c", "(a + b) * c"),
        ("a + (b * c)", "a + b * c"),
        ("(a + b) + c", "a + b + c"),
        ("a + (b + c)", "a + (b + c)"),
        ("a / (b * c)", "a / (b * c)"),
        ("(-a) * b", "-a * b"),
        ("-(-a)", "--a"),
        ("-(a - b)", "-(a - b)"),
        ("1.50 + 1e3 + 5%", "1.5 + 1000 + 5%"),
        ("0.000001", "1e-06"),
        ("100000000000000000000", "1e+20"),
        (r'x{q="a\"b\\c"}', r'x{q="a\"b\\c"}'),
        ("errors/requests*100", "errors / requests * 100"),
    ],
)
def test_describe_prints_the_canonical_form(text: str, canonical: str) -> None:
    query = parse(text)
    assert describe(query) == canonical == str(query)
    assert parse(canonical) == query


def _random_selector(rng: random.Random) -> Selector:
    keys = sorted(rng.sample(["a", "b", "host", "x_y"], rng.randrange(3)))
    values = ["", "v", 'q"\\', "é ,}"]
    matchers = [Matcher(k, rng.choice(["=", "!="]), rng.choice(values)) for k in keys]  # type: ignore[arg-type]
    return Selector(rng.choice(["cpu", "avg", "m:x.y", "_z"]), tuple(matchers))


def _random_expr(rng: random.Random, depth: int) -> Expr:
    """A random tree as the parser would build it (matchers sorted by key, no duplicate keys)."""
    choice = rng.randrange(8 if depth > 0 else 3)
    if choice == 0:
        return Number(rng.choice([0.0, 1.0, 2.5, 90.0, 1e-9, 123456789.125, 1e300]), percent=rng.random() < 0.2)
    if choice == 1:
        return _random_selector(rng)
    if choice == 2:
        window_s = rng.choice([1, 59, 60, 3600 + 1, 86400 * 3 + 5])
        return Aggregation(rng.choice(FUNCTIONS), _random_selector(rng), window_s)
    if choice == 3:
        return Negate(_random_expr(rng, depth - 1))
    op = rng.choice("+-*/")
    return BinaryOp(op, _random_expr(rng, depth - 1), _random_expr(rng, depth - 1))  # type: ignore[arg-type]


def test_describe_round_trips_random_trees() -> None:
    rng = random.Random(7)
    for _ in range(1500):
        expr: Expr | Comparison = _random_expr(rng, rng.randrange(6))
        if rng.random() < 0.3:
            op = rng.choice([">", ">=", "<", "<=", "==", "!="])
            expr = Comparison(op, expr, _random_expr(rng, 2))  # type: ignore[arg-type]
        query = Query(expr)
        text = describe(query)
        assert parse(text) == query, text
        assert describe(parse(text)) == text


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "empty query: write an expression such as avg(cpu_percent[5m]) > 90"),
        ("   ", 3, "empty query"),
        ("cpu[5m]", 3, "a window needs a function around it, as in avg(cpu[5m]); a bare cpu means its latest value"),
        ("avgg(cpu[5m])", 0, "unknown function 'avgg'; known functions: avg, min, max, sum, count, rate"),
        ("1 + AVG(cpu[5m])", 4, "unknown function 'AVG'; did you mean 'avg'?"),
        ("avg(max(cpu[5m]))", 4, "functions do not nest: avg( takes a series"),
        ("avg(5)", 4, "avg( takes a series and a window, as in avg(cpu_percent[5m])"),
        ("avg()", 4, "avg( takes a series and a window"),
        ("avg(cpu[5m]", 11, "expected ')' to close the '(' at position 3, found the end of the query"),
        ("avg(cpu[5m], 2)", 11, "expected ')' to close the '(' at position 3, found ','"),
        ("avg(cpu[5m)", 10, "expected ']' to close the '[' at position 7, found ')'"),
        ("avg(cpu[])", 8, "expected a duration such as 5m, 1h or 1h30m, found ']'"),
        ("avg(cpu[5])", 8, "a window needs a unit: s, m, h or d, as in [5m]"),
        ("avg(cpu[0m])", 8, "a window must be longer than zero"),
        ("avg(cpu[367d])", 8, "a window can be at most 366d"),
        ("avg(cpu[5ms])", 8, "5ms is neither a number nor a duration"),
        ("avg(cpu[1h5x])", 11, "unknown duration unit 'x'"),
        ("avg(cpu[30m1h])", 12, "duration units go from largest to smallest, each at most once"),
        ("avg(cpu[1h30])", 12, "missing a unit after 30"),
        ("avg(cpu[1.5m])", 8, "a duration takes whole numbers: write 90s rather than 1.5m"),
        ("cpu > 5m", 6, "a duration such as 5m only goes in a window, as in avg(x[5m])"),
        ("(1 + 2", 6, "expected ')' to close the '(' at position 0, found the end of the query"),
        ("(1 2)", 3, "expected ')' to close the '(' at position 0, found '2'"),
        ("1 +", 3, "expected a number, a series or a function call after '+', found the end of the query"),
        ("1 + * 2", 4, "expected a number, a series or a function call after '+', found '*'"),
        (")", 0, "expected a number, a series or a function call, found ')'"),
        ("1 2", 2, "unexpected '2' after a complete expression; join expressions with an operator such as + or >"),
        ("avg(cpu[5m]) )", 13, "this ')' has no matching '('"),
        ("cpu = 90", 4, "use '==' to compare"),
        ("a > b > c", 6, "only one comparison is allowed in a query"),
        ("a > 1 == true", 6, "only one comparison is allowed"),
        ("(a > b)", 3, "a comparison can only be the outermost operation"),
        ("1 + (cpu < 3) * 2", 9, "a comparison can only be the outermost operation"),
        ("a >", 3, "expected a number, a series or a function call after '>'"),
        ('cpu{host="a"', 12, "missing '}' to close the '{' at position 3"),
        ("cpu{host", 8, "expected '=' or '!=' after the label host"),
        ("cpu{host}", 8, "expected '=' or '!=' after the label host"),
        ('cpu{host=="a"}', 8, "label matchers use a single '=' (or '!=')"),
        ("cpu{host=a}", 9, 'label values are double-quoted strings, as in host="web-1"'),
        ("cpu{host='a'}", 9, 'strings take double quotes, as in host="web-1"'),
        ('cpu{="a"}', 4, "expected a label name, found '='"),
        ('cpu{a="1" b="2"}', 10, "expected ',' or '}' after a label matcher, found 'b'"),
        ('cpu{a="1", a="2"}', 11, "the label a is matched with '=' twice"),
        ('cpu{host.name="a"}', 8, "label names use letters, digits and '_' only, not '.'"),
        ('cpu{k:v="a"}', 5, "label names use letters, digits and '_' only, not ':'"),
        ("x" * 257, 0, "this series name is 257 characters long; at most 256 are allowed"),
        ("avg(" + "x" * 257 + "[5m])", 4, "this series name is 257 characters long"),
        ("cpu{" + "k" * 257 + '="v"}', 4, "this label name is 257 characters long"),
        ('cpu{k="' + "v" * 257 + '"}', 6, "this label value is 257 characters long"),
        ('cpu{a=~"1.*"}', 6, "regex matchers (=~, !~) are not supported; use = or !="),
        ('cpu{a="1}', 6, 'unterminated string: add the closing "'),
        ('cpu{a="1\\', 6, "unterminated string"),
        ('cpu{a="\\n"}', 7, 'unsupported escape \\n in a string; only \\" and \\\\ are allowed'),
        ('"cpu"', 0, 'a string can only be a label value, as in x{host="web-1"}'),
        ("cpu ! 3", 4, "unexpected '!'; did you mean '!='?"),
        ("cpu%", 3, "'%' can only follow a number, as in 5%"),
        ("5%%", 2, "'%' can only follow a number"),
        ("cpu > 90percent", 6, "90percent is neither a number nor a duration"),
        ("cpu & mem", 4, "unexpected character '&'"),
        ("cpu\u00a0> 1", 3, "unexpected character '\\xa0'"),
        ("1.", 2, "expected digits after the decimal point"),
        ("1e", 2, "expected the digits of an exponent, as in 1e6"),
        ("1e+ 2", 3, "expected the digits of an exponent"),
        ("1_000", 1, "unexpected '_' right after the number 1"),
        ("1" + "0" * 400, 0, "this number is too large"),
    ],
)
def test_bad_queries_name_the_problem_and_where_it_is(text: str, position: int, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse(text)
    error = caught.value
    assert (error.position, error.query) == (position, text)
    assert error.message.startswith(message), error.message
    assert isinstance(error, ToolRetry)
    assert error.public_message.startswith(f"{error.message} (at position {position}):\n")


def test_public_message_draws_a_caret_under_the_position() -> None:
    with pytest.raises(QueryError) as caught:
        parse("avgg(cpu[5m]) > 90")
    assert caught.value.public_message == (
        "unknown function 'avgg'; known functions: avg, min, max, sum, count, rate, increase, last, p50, p90, "
        "p95, p99 (at position 0):\n"
        "  avgg(cpu[5m]) > 90\n"
        "  ^"
    )
    assert str(caught.value) == caught.value.public_message


def test_a_function_without_a_window_covers_five_minutes() -> None:
    # the seed's own example: add_custom_metric(name="api_latency", query="avg(response_time)")
    assert parse("avg(response_time)") == parse("avg(response_time[5m])")
    assert describe(parse('p95(lat{a="1"}) > 100')) == 'p95(lat{a="1"}[5m]) > 100'


def test_caret_at_the_end_and_under_control_characters() -> None:
    with pytest.raises(QueryError) as caught:
        parse("avg(\ncpu[5m]\t")
    assert caught.value.public_message.endswith("\n  avg( cpu[5m] \n               ^")


def test_caret_in_a_long_query_shows_the_neighbourhood() -> None:
    text = 'cpu{host="' + "x" * 200 + '"} $ 1' + " " * 300
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert caught.value.position == 213
    _, shown, caret = caught.value.public_message.split("\n")
    assert shown.startswith("  …xxx") and shown.endswith("  …")
    assert shown[caret.index("^")] == "$"
    assert len(shown) < 80


def test_query_error_without_the_text_has_no_caret() -> None:
    error = QueryError("unknown series 'cpu'", 4)
    assert error.public_message == "unknown series 'cpu' (at position 4)"


def test_callers_can_point_at_a_selector_they_reject() -> None:
    text = "avg(cpu[5m]) + avg(memory_percnt[5m])"
    query = parse(text)
    unknown = [s for s in query.series() if s.name not in {"cpu", "memory_percent"}]
    error = QueryError(f"unknown series {unknown[0].name!r}", unknown[0].position, text)
    assert error.public_message.splitlines()[2] == "  " + " " * 19 + "^"


@pytest.mark.parametrize(
    "text",
    ["x" * 1500 + "[5m]", "9" * 1500 + "d", "avg(" + "y" * 1500 + ")", "1 > " + "z" * 1500 + "(", '1 "' + "s" * 1500 + '"'],
)
def test_messages_quote_only_a_little_of_a_long_token(text: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert len(caught.value.message) < 200
    assert len(caught.value.public_message) < 400


def test_too_long() -> None:
    text = "1" + " + 1" * 500
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert caught.value.position == MAX_QUERY_LENGTH
    assert caught.value.message == f"the query is too long: {len(text)} characters, the limit is 2000"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("(" * 60 + "1" + ")" * 60, MAX_DEPTH),
        ("-" * 60 + "1", MAX_DEPTH),
        ("1" + "+1" * 60, 1 + 2 * MAX_DEPTH),
        ("1" + "*1" * 60, 1 + 2 * MAX_DEPTH),
        ("(" * 5000, MAX_QUERY_LENGTH),  # too long is checked first
        ("(" * 1999, MAX_DEPTH),
    ],
)
def test_too_deep(text: str, position: int) -> None:
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert caught.value.position == position


def test_as_deep_as_allowed_parses_and_evaluates() -> None:
    assert parse("(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1)) == Query(n(1))
    chain = parse("1" + "+1" * MAX_DEPTH)
    assert describe(chain) == "1" + " + 1" * MAX_DEPTH


# --- fuzz -----------------------------------------------------------------------------------------

_PIECES = [
    "avg", "p95", "rate", "cpu", "x.y:z", "{", "}", "[", "]", "(", ")", ",", "=", "!=", "==", ">", ">=",
    "<", "<=", "+", "-", "*", "/", '"', "\\", '"a"', "5m", "1h30m", "5", "2.5", "1e3", "%", ".", " ",
    "\n", "é", "~", "'", "!", "e", "_", "0", "9", "d", "s",
]


def _check(text: str) -> None:
    try:
        query = parse(text)
    except QueryError as error:
        assert 0 <= error.position <= len(text)
        assert error.public_message.count("^") >= 1
    else:
        assert parse(describe(query)) == query


def test_fuzz_random_strings_only_ever_raise_query_error() -> None:
    rng = random.Random(20240611)
    alphabet = "".join(set("".join(_PIECES))) + "\t#$&|?;:^`@\x00\u200b"
    for _ in range(3000):
        _check("".join(rng.choice(alphabet) for _ in range(rng.randrange(40))))
    for _ in range(3000):
        _check("".join(rng.choice(_PIECES) for _ in range(rng.randrange(25))))


def test_fuzz_mutated_valid_queries() -> None:
    rng = random.Random(99)
    seeds = [
        'avg(response_time_ms{service="api", region!="eu"}[5m]) > 500',
        "sum(errors[5m]) / sum(requests[5m]) * 100 >= 5%",
        '-(rate(x{a="\\"q\\\\"}[1h30m]) - p99(y[1d])) * 2.5e-3 != last(z[90s])',
    ]
    for _ in range(4000):
        text = list(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(text) + 1)
            action = rng.randrange(3)
            if action == 0 and i < len(text):
                del text[i]
            elif action == 1:
                text.insert(i, rng.choice(_PIECES))
            elif i < len(text):
                text[i] = rng.choice(_PIECES)
        _check("".join(text))


async def test_fuzz_parsed_queries_evaluate_without_raising() -> None:
    rng = random.Random(3)
    source = DictSource({"cpu": {labels(a="1"): ago((10, 1), (5, 0), (0, 2))}, "avg": {labels(): ago((1, 0))}})
    for _ in range(300):
        query = Query(_random_expr(rng, 4))
        result = await evaluate(query, source, NOW)
        assert result.no_data == (result.value is None)


# --- evaluation -----------------------------------------------------------------------------------


@pytest.fixture
def source() -> DictSource:
    return DictSource(
        {
            # two hosts of one service, and one of another; points every 60 s
            "cpu": {
                labels(host="a", svc="api"): ago((240, 10), (180, 20), (120, 30), (60, 40), (0, 50)),
                labels(host="b", svc="api"): ago((120, 70), (60, 80), (0, 90)),
                labels(host="c", svc="db"): ago((60, 5), (0, 7)),
            },
            # a counter that restarts: 100 → 160 → 10 (restart) → 40; increase 60 + 10 + 30 = 100 over 180 s
            "requests_total": {
                labels(svc="api"): ago((180, 100), (120, 160), (60, 10), (0, 40)),
                labels(svc="web"): ago((100, 0), (0, 50)),  # 50 over 100 s
            },
            "errors": {labels(svc="api"): ago((30, 0), (0, 0))},  # zero, which is data
            "requests": {labels(svc="api"): ago((30, 0), (0, 0))},
            "latency_ms": {labels(): ago(*[(i, v) for i, v in enumerate([15, 1, 9, 3, 7, 11, 5, 13])])},
            "stale": {labels(): ago((7200, 1))},  # nothing in the last hour
            "empty": {labels(): []},
        }
    )


async def value(text: str, source: DictSource, now: float = NOW) -> float | bool | None:
    return (await evaluate(parse(text), source, now)).value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("avg(cpu[5m])", 40.2),  # (10 + 20 + 30 + 40 + 50 + 70 + 80 + 90 + 5 + 7) / 10
        ('avg(cpu{svc="api"}[5m])', (10 + 20 + 30 + 40 + 50 + 70 + 80 + 90) / 8),
        ('avg(cpu{svc="api"}[1m])', (40 + 50 + 80 + 90) / 4),  # both window ends are inclusive
        ('avg(cpu{svc="api", host="b"}[5m])', 80),
        ('avg(cpu{host!="a"}[5m])', (70 + 80 + 90 + 5 + 7) / 5),
        ('avg(cpu{svc="api", host!="a"}[5m])', 80),
        ('avg(cpu{nothere!="x"}[5m])', 40.2),  # a missing label is "not x"
        ("min(cpu[5m])", 5),
        ("max(cpu[5m])", 90),
        ("sum(cpu[2m])", 30 + 40 + 50 + 70 + 80 + 90 + 5 + 7),
        ("count(cpu[5m])", 10),
        ("count(cpu[59s])", 3),
        ("last(cpu[5m])", 50 + 90 + 7),  # each series' newest point, summed
        ('last(cpu{svc="db"}[5m])', 7),
        ("cpu", 50 + 90 + 7),  # a bare selector: latest of each series, summed
        ('cpu{svc="api"}', 140),
        ('cpu{host!="b", host!="c"}', 50),
        ("stale", 1),  # latest, however old: freshness is the store's business
        ('rate(requests_total{svc="api"}[5m])', 100 / 180),
        ("rate(requests_total[5m])", 100 / 180 + 50 / 100),
        ('increase(requests_total{svc="api"}[5m])', 100 / 180 * 300),
        ('increase(requests_total{svc="web"}[100s])', 50),
        ("p50(latency_ms[1m])", 8),
        ("p90(latency_ms[1m])", 13.6),  # rank 0.9 * 7 = 6.3 between 13 and 15
        ("p95(latency_ms[1m])", 14.3),
        ("p99(latency_ms[1m])", 14.86),
        ("p95(cpu{svc=\"db\"}[5m])", 5 + 0.95 * 2),
        ("p99(cpu{host=\"c\"}[30s])", 7),  # a single point is every percentile
        ("sum(errors[5m])", 0),
        ("count(errors[5m])", 2),
    ],
)
async def test_aggregations(source: DictSource, text: str, expected: float) -> None:
    result = await evaluate(parse(text), source, NOW)
    assert result.value == pytest.approx(expected)
    assert result.no_data is False


async def test_rate_treats_a_drop_as_a_restart_from_zero() -> None:
    source = DictSource({"c": {labels(): [P(0, 5), P(10, 8), P(20, 2), P(30, 3), P(40, 1)]}})
    # 5→8: +3; 8→2: restart, +2; 2→3: +1; 3→1: restart, +1 → 7 over 40 s
    assert await value("rate(c[1m])", source, now=40) == pytest.approx(7 / 40)
    assert await value("increase(c[1m])", source, now=40) == pytest.approx(7 / 40 * 60)


async def test_points_are_ordered_before_rate_and_last() -> None:
    source = DictSource({"c": {labels(): [P(30, 9), P(0, 0), P(20, 6), P(10, 3)]}})
    assert await value("rate(c[1m])", source, now=30) == pytest.approx(9 / 30)
    assert await value("last(c[1m])", source, now=30) == 9


async def test_points_outside_the_window_and_not_finite_are_ignored() -> None:
    class Loose(DictSource):
        async def points(self, name, matchers, start, end):  # returns everything, whatever the range
            return {key: points for key, points in self._matching(name, matchers)}

    source = Loose({"x": {labels(): [P(0, 1000), P(90, 1), P(95, float("nan")), P(100, 3), P(200, 1000)]}})
    assert await value("avg(x[10s])", source, now=100) == 2
    assert await value("max(x[1m])", source, now=100) == 3


@pytest.mark.parametrize("function", FUNCTIONS)
async def test_huge_values_never_raise(function: str) -> None:
    source = DictSource(
        {"x": {labels(a="1"): ago((2, 1e308), (1, -1e308), (0, 1e308)), labels(a="2"): ago((0, 1e308))}}
    )
    for text in (f"{function}(x[1m])", "x", f"{function}(x[1m]) * 1e10 - x"):
        result = await evaluate(parse(text), source, NOW)
        assert result.no_data or math.isfinite(result.value)
    assert await value("avg(x[1m])", source) == pytest.approx(5e307)
    assert await value("p50(x[1m])", source) == 1e308


async def test_rate_needs_two_points_apart_in_time(source: DictSource) -> None:
    single = DictSource({"c": {labels(a="1"): ago((0, 5)), labels(a="2"): [P(NOW, 1), P(NOW, 4)]}})
    assert (await evaluate(parse("rate(c[5m])"), single, NOW)).no_data
    mixed = DictSource({"c": {labels(a="1"): ago((0, 5)), labels(a="2"): ago((10, 1), (0, 6))}})
    assert await value("rate(c[5m])", mixed) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "text",
    [
        "avg(nothing[5m])",
        "count(nothing[5m])",
        "rate(nothing[5m])",
        "p95(nothing[5m])",
        "last(nothing[5m])",
        "nothing",
        'cpu{svc="nope"}',
        'avg(cpu{host!="a", host!="b", host!="c"}[5m])',
        "avg(stale[1h])",
        "sum(empty[5m])",
        "count(empty[5m])",
        "empty",
        "cpu + nothing",
        "-nothing",
        "nothing * 0",
        "1 / 0",
        "sum(errors[5m]) / sum(requests[5m]) * 100",  # 0 / 0
        "1e300 * 1e300",  # overflow is not a number to judge by either
        "nothing > 1",
        "1 < nothing",
        "1 / 0 == 1 / 0",
    ],
)
async def test_no_data_is_not_zero(source: DictSource, text: str) -> None:
    result = await evaluate(parse(text), source, NOW)
    assert result == Result(None)
    assert result.no_data is True


async def test_zero_is_data(source: DictSource) -> None:
    result = await evaluate(parse("sum(errors[5m])"), source, NOW)
    assert (result.value, result.no_data) == (0, False)
    assert (await evaluate(parse("sum(errors[5m]) == 0"), source, NOW)) == Result(True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("8 / 4 / 2", 1),
        ("-2 * -3", 6),
        ("-(1 - 3)", 2),
        ("50%", 50),
        ("1e3 / 8", 125),
        ('sum(cpu{svc="db"}[5m]) / count(cpu{svc="db"}[5m]) * 100', 600),
        ("max(cpu[5m]) - min(cpu[5m])", 85),
        ("cpu / 3", (50 + 90 + 7) / 3),
    ],
)
async def test_arithmetic(source: DictSource, text: str, expected: float) -> None:
    assert await value(text, source) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("avg(cpu[5m]) > 40", True),
        ("avg(cpu[5m]) > 40.2", False),
        ("avg(cpu[5m]) >= 40.2", True),
        ("avg(cpu[5m]) < 40.2", False),
        ("avg(cpu[5m]) <= 40.2", True),
        ("count(cpu[5m]) == 10", True),
        ("count(cpu[5m]) != 10", False),
        ('cpu{host="b"} > 90', False),
        ('cpu{host="b"} >= 90', True),
        ("max(cpu[5m]) - 10 > 5 * 15", True),
        ("rate(requests_total[5m]) * 60 > 60", True),  # (0.556 + 0.5) per second, 63 a minute
        ('sum(cpu{svc="db"}[5m]) / 12 * 100 >= 100%', True),
    ],
)
async def test_comparisons(source: DictSource, text: str, expected: bool) -> None:
    result = await evaluate(parse(text), source, NOW)
    assert result.value is expected
    assert result.no_data is False


async def test_each_distinct_read_is_made_once(source: DictSource) -> None:
    text = 'avg(cpu[5m]) / avg(cpu[5m]) + cpu{svc="api"} + cpu{svc="api"} + avg(cpu[1m]) > 0'
    await evaluate(parse(text), source, NOW)
    assert sorted(source.reads) == [
        ("latest", "cpu", {"svc": "api"}),
        ("points", "cpu", {}),
        ("points", "cpu", {}),
    ]


async def test_only_equality_matchers_reach_the_source(source: DictSource) -> None:
    await evaluate(parse('avg(cpu{svc="api", host!="a"}[5m])'), source, NOW)
    assert source.reads == [("points", "cpu", {"svc": "api"})]


async def test_a_source_error_propagates_unchanged(source: DictSource) -> None:
    class Failing(DictSource):
        async def latest(self, name, matchers):
            raise ToolRetry(f"no series {name}")

    with pytest.raises(ToolRetry, match="no series mem"):
        await evaluate(parse("avg(cpu[5m]) + mem"), Failing(source.data), NOW)
