"""The log index's behaviour, run against both stores (SQLite file, real PostgreSQL server), and a
cross-check that every query finds the same records on both for one corpus of varied log lines."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import psycopg
import pytest

from ops_agent.errors import ConfigError, QueryError, UpstreamError
from ops_agent.tools.logs.index.postgres_store import PostgresLogStore
from ops_agent.tools.logs.index.query import parse_query
from ops_agent.tools.logs.index.sqlite_store import SqliteLogStore
from ops_agent.tools.logs.index.store import LogFilter, LogStore, SearchPage, StoredRecord
from ops_agent.tools.logs.record import LogRecord
from tests.postgres import create_database, create_schema
from tests.processes import free_port

BASE = 1_700_000_000.0  # 2023-11-14T22:13:20Z
END = BASE + 3600


async def opened(store: LogStore) -> LogStore:
    await store.open()
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[LogStore]:
    """An empty store; for PostgreSQL in a new schema on the session's server."""
    if request.param == "sqlite":
        store = SqliteLogStore(tmp_path / "logs.db")
    else:
        store = PostgresLogStore(create_schema(request.getfixturevalue("postgres_url")))
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def both(tmp_path, postgres_url: str) -> AsyncIterator[tuple[LogStore, LogStore]]:
    sqlite = await opened(SqliteLogStore(tmp_path / "logs.db"))
    postgres = await opened(PostgresLogStore(create_schema(postgres_url)))
    yield sqlite, postgres
    await sqlite.close()
    await postgres.close()


def where(query: str = "", *, start: float | None = None, end: float = END, **options) -> LogFilter:
    return LogFilter(end=end, start=start, query=parse_query(query), **options)


async def found(store: LogStore, query: str = "", **options) -> list[str]:
    """Messages of the matching records, newest first."""
    return [record.message for record in await store.records(where(query, **options), limit=10_000)]


CORPUS = [
    LogRecord(BASE + 1, "connection refused by upstream", "error", "api", "web-1",
              {"http": {"status": 502, "method": "GET", "path": "/api/users"}, "duration_ms": 1200}),
    LogRecord(BASE + 2, "request served", "info", "api", "web-2",
              {"http": {"status": 200, "method": "GET", "path": "/api/users/42"}, "duration_ms": 12.5}),
    LogRecord(BASE + 3, "refused connection from 10.0.0.1", "warning", "gateway", "edge-1", {"client": "10.0.0.1"}),
    LogRecord(BASE + 4, "deployment promoted", "notice", "deployer", "ci-1",
              {"deployment_id": "dpl_abc123", "status": "ready"}),
    LogRecord(BASE + 5, "Timeout waiting for lock", "error", "payments", "db-1", {"status": 500, "retry": True}),
    LogRecord(BASE + 6, "healthcheck ok", "debug", "api", "web-1", {"status": "200"}),
    LogRecord(BASE + 7, "connected to database", "info", "payments", "db-1", {"latency": "35ms"}),
    LogRecord(BASE + 8, "Payment declined: card expired", "critical", "payments-eu", "web-2",
              {"http": {"status": 402}}),
]
NEWEST_FIRST = [record.message for record in reversed(CORPUS)]


@pytest.fixture
async def corpus(store: LogStore) -> LogStore:
    assert await store.append(CORPUS) == len(CORPUS)
    return store


def messages(*numbers: int) -> list[str]:
    """Messages of CORPUS entries by their 1-based number, newest first."""
    return [CORPUS[n - 1].message for n in sorted(numbers, reverse=True)]


# --- writing and reading --------------------------------------------------------------------------------


async def test_an_empty_store_has_no_records(store):
    stats = await store.stats()
    assert (stats["records"], stats["oldest"], stats["newest"]) == (0, None, None)
    assert stats["backend"] in ("sqlite", "postgresql")
    assert await store.append([]) == 0
    assert await found(store) == []


async def test_append_writes_the_batch_and_stats_count_it(store):
    assert await store.append(CORPUS[:3]) == 3
    assert await store.append(CORPUS[3:]) == len(CORPUS) - 3
    stats = await store.stats()
    assert (stats["records"], stats["oldest"], stats["newest"]) == (len(CORPUS), BASE + 1, BASE + 8)


async def test_records_come_back_as_written(corpus):
    records = await corpus.records(where(), limit=100)
    assert len({r.id for r in records}) == len(CORPUS)
    for record, original in zip(records, reversed(CORPUS), strict=True):
        assert (record.time, record.message, record.severity, record.service, record.host, record.attributes) == (
            original.time, original.message, original.severity, original.service, original.host, original.attributes
        )


async def test_odd_unicode_is_stored_and_found(store):
    lines = [
        "Café naïve façade — ÉCOLE",
        "Ошибка соединения с БАЗОЙ данных",
        "日本語のログ: 接続に失敗しました",
        "🚀 deploy started 🤖bot ✅",
        "İstanbul straße ΟΔΟΣ 150µs",
        "tab\tnew\nline\r\x1b[31mred\x1b[0m \u200bzero\ufeffwidth",
        "e\u0301te\u0301 combining",
        "right-to-left עברית العربية",
    ]
    await store.append([LogRecord(BASE + i, line, attributes={"text": line}) for i, line in enumerate(lines)])
    records = await store.records(where(), limit=100)
    assert [(r.message, r.attributes) for r in records] == [(line, {"text": line}) for line in reversed(lines)]
    assert await found(store, "cafe ecole") == [lines[0]]  # case and accents folded
    assert await found(store, "ошибка базой") == [lines[1]]
    assert await found(store, "日本語のログ") == [lines[2]]
    assert await found(store, "deploy") == [lines[3]]
    assert await found(store, '"31mred 0m zero width"') == [lines[5]]  # control and zero-width characters separate
    assert await found(store, "ete") == [lines[6]]
    assert await found(store, "עברית") == [lines[7]]


async def test_a_nul_character_does_not_break_a_write(store):
    await store.append([LogRecord(BASE, "before\x00after", service="a\x00b", attributes={"k\x00": "v\x00w"})])
    [record] = await store.records(where(), limit=10)
    assert record.message.replace("\ufffd", "\x00") == "before\x00after"  # PostgreSQL text has no NUL
    assert await found(store, '"before after"') == [record.message]
    assert await found(store, "w") == [record.message]


async def test_a_non_finite_attribute_does_not_break_attribute_queries(store):
    await store.append([LogRecord(BASE, "odd", attributes={"ratio": float("nan"), "n": 1}), LogRecord(BASE + 1, "ok")])
    assert await found(store, "n:1") == ["odd"]


async def test_a_large_batch_round_trips(store):
    records = [
        LogRecord(BASE + i * 0.1, f"request {i} took {i % 97} ms", "error" if i % 10 == 0 else "info",
                  f"svc-{i % 5}", f"host-{i % 3}", {"n": i, "path": f"/api/items/{i}"})
        for i in range(20_000)
    ]
    assert await store.append(records) == 20_000
    assert (await store.stats())["records"] == 20_000
    page = await store.search(where("ms", start=BASE, end=BASE + 2000), limit=5)
    assert page.total == 20_000 and sum(page.histogram) == 20_000
    assert [r.message for r in page.records] == [f"request {i} took {i % 97} ms" for i in range(19_999, 19_994, -1)]
    assert (await store.search(where("items 12345"), limit=10)).total == 1
    assert (await store.search(where("n:>=19990 severity:error"), limit=10)).total == 1


async def test_a_record_beyond_the_index_limits_is_written_and_found(store):
    long_word = "語" * 800  # 2400 bytes: past tsvector's 2046
    many_words = " ".join(f"w{i}" for i in range(20_000))
    await store.append([LogRecord(BASE, f"{long_word} tail"), LogRecord(BASE + 1, many_words)])
    assert await found(store, long_word) == [f"{long_word} tail"]
    assert await found(store, "w19999") == [many_words]
    assert await found(store, '"w1 w2 w3"') == [many_words]


# --- the search language --------------------------------------------------------------------------------


async def test_a_term_matches_a_whole_word_in_any_case(corpus):
    assert await found(corpus, "refused") == messages(1, 3)
    assert await found(corpus, "TIMEOUT") == messages(5)
    assert await found(corpus, "refuse") == []


async def test_terms_are_all_required_with_or_without_and(corpus):
    assert await found(corpus, "connection refused") == messages(1, 3)
    assert await found(corpus, "connection AND upstream") == messages(1)
    assert await found(corpus, "connection upstream database") == []


async def test_a_phrase_needs_its_words_in_order(corpus):
    assert await found(corpus, '"connection refused"') == messages(1)
    assert await found(corpus, '"refused connection"') == messages(3)
    assert await found(corpus, '"connection upstream"') == []


async def test_a_prefix_matches_the_start_of_words(corpus):
    assert await found(corpus, "conn*") == messages(1, 3, 7)
    assert await found(corpus, "deploy*") == messages(4)


async def test_terms_match_attribute_values(corpus):
    assert await found(corpus, "dpl_abc123") == messages(4)
    assert await found(corpus, "ready") == messages(4)
    assert await found(corpus, "35ms") == messages(7)
    assert await found(corpus, "/api/users") == messages(1, 2)  # a phrase: "api users"
    assert await found(corpus, "GET") == messages(1, 2)


async def test_a_phrase_does_not_run_from_the_message_into_the_attributes(corpus):
    assert await found(corpus, '"promoted dpl"') == []
    assert await found(corpus, "promoted dpl") == messages(4)


async def test_punctuated_words_split_as_sqlite_splits_them(store):
    lines = [
        "from 10.0.0.1 port 5432", "id dpl_abc ok", "GET /api/users/7", "host web-1 up", "v1.2.3-rc1 at 10.0.0.12"
    ]
    await store.append([LogRecord(BASE + i, line) for i, line in enumerate(lines)])
    assert await found(store, "10.0.0.1") == [lines[0]]
    assert await found(store, "10.0.0") == [lines[4], lines[0]]
    assert await found(store, "0") == [lines[4], lines[0]]
    assert await found(store, "dpl_abc") == [lines[1]]
    assert await found(store, "abc") == [lines[1]]
    assert await found(store, "dpl") == [lines[1]]
    assert await found(store, "/api/users") == [lines[2]]
    assert await found(store, "api/us*") == [lines[2]]
    assert await found(store, "users") == [lines[2]]
    assert await found(store, "web-1") == [lines[3]]
    assert await found(store, "web") == [lines[3]]
    assert await found(store, "1") == [lines[3], lines[0]]
    assert await found(store, "rc1") == [lines[4]]


async def test_service_and_host_are_exact_or_a_prefix(corpus):
    assert await found(corpus, "service:payments") == messages(5, 7)
    assert await found(corpus, "service:pay*") == messages(5, 7, 8)
    assert await found(corpus, "host:web-1") == messages(1, 6)
    assert await found(corpus, "host:web") == []
    assert await found(corpus, "service:*") == NEWEST_FIRST


async def test_attributes_compare_as_text_or_as_numbers(corpus):
    assert await found(corpus, "status:500") == messages(5)
    assert await found(corpus, "status:200") == messages(6)  # the string "200"
    assert await found(corpus, "http.status:200") == messages(2)
    assert await found(corpus, "http.method:GET") == messages(1, 2)
    assert await found(corpus, "http.path:/api/users*") == messages(1, 2)
    assert await found(corpus, "http.status:>=500") == messages(1)
    assert await found(corpus, "http.status:>200") == messages(1, 8)
    assert await found(corpus, "http.status:<=402") == messages(2, 8)
    assert await found(corpus, "duration_ms:<100") == messages(2)
    assert await found(corpus, "duration_ms:12.5") == messages(2)
    assert await found(corpus, "latency:>30") == messages(7)  # "35ms": its leading number
    assert await found(corpus, "missing:x") == []
    assert await found(corpus, "http:*") == messages(1, 2, 8)


async def test_a_dotted_name_reaches_nested_or_flat_keys(store):
    await store.append([
        LogRecord(BASE + 1, "nested", attributes={"http": {"response": {"status_code": 503}}}),
        LogRecord(BASE + 2, "flat", attributes={"http.response.status_code": 504}),
        LogRecord(BASE + 3, "neither", attributes={"http": {"status": 200}}),
    ])
    assert await found(store, "http.response.status_code:>=500") == ["flat", "nested"]
    assert await found(store, "http.response.status_code:504") == ["flat"]


async def test_severity_is_a_threshold(corpus):
    assert await found(corpus, "severity:error") == messages(1, 5, 8)
    assert await found(corpus, "level:warn") == messages(1, 3, 5, 8)
    assert await found(corpus, "severity:debug") == NEWEST_FIRST


async def test_not_and_minus_exclude(corpus):
    assert await found(corpus, "connection NOT upstream") == messages(3)
    assert await found(corpus, "connection -upstream") == messages(3)
    assert await found(corpus, "service:api -healthcheck") == messages(1, 2)
    assert await found(corpus, "-service:api -service:payments") == messages(3, 4, 8)


async def test_a_not_only_query_matches_everything_else(corpus):
    assert await found(corpus, "NOT connection") == messages(2, 4, 5, 6, 7, 8)
    assert await found(corpus, "-connection -refused -served") == messages(4, 5, 6, 7, 8)
    assert await found(corpus, 'NOT "connection refused"') == messages(2, 3, 4, 5, 6, 7, 8)


async def test_or_and_parentheses(corpus):
    assert await found(corpus, "timeout OR declined") == messages(5, 8)
    assert await found(corpus, "served OR timeout healthcheck") == messages(2)  # AND binds tighter
    assert await found(corpus, "(served OR timeout) lock") == messages(5)
    assert await found(corpus, "(connection OR connected) NOT (upstream OR database)") == messages(3)


async def test_text_and_fields_mix_inside_or(corpus):
    assert await found(corpus, "upstream OR service:deployer") == messages(1, 4)
    assert await found(corpus, "(timeout AND severity:error) OR host:edge-1") == messages(3, 5)
    assert await found(corpus, "served OR NOT service:api") == messages(2, 3, 4, 5, 7, 8)
    assert await found(corpus, "(refused OR status:ready) -gateway service:api OR deployment") == messages(1, 4)


async def test_a_word_with_no_letters_to_the_tokenizer_matches_nothing(corpus):
    assert await found(corpus, "_") == []
    assert await found(corpus, "__*") == []
    assert await found(corpus, "NOT _") == NEWEST_FIRST
    assert await found(corpus, "timeout OR _") == messages(5)
    assert await found(corpus, "timeout -_") == messages(5)


METACHARACTERS = [
    "it's", "'", "''", "it''s", '"it\'s 100%"', "100%", "%", "%%", "_", "user_name", "a&b", "a & b", "&&", "a|b",
    "|", "!x", "!", "!!", "a:b", ":", "x:", "field::", "(", ")", "( )", "(x", "x)", "*", "**", "x*y", "NEAR",
    "NEAR(a b)", "a NEAR b", '"NEAR"', "\\", "\\\\", "c:\\temp\\x", "C:\\\\temp", "back\\slash", '"a\\"b"', '"',
    "x:'y'", "-'", "-", "--", "a--b", "<->", "a <-> b", "a:*", "'a':*", "a:>1", "x:>=1e5", "x:<-1",
    "@@", "$1", "%s", "%(x)s", "{}", "::tsquery", "'; DROP TABLE log_records; --", "\x00", "é*", "ÉCOLE",
]
META_LINES = [
    "it's 100% done", "user_name not found", "a&b|c!d", "c:\\temp\\x was missing", "NEAR the end of a b",
    "back\\slash and 'quotes' and \"double\"", "tsquery <-> operators :* here", "percent %s and %(x)s and $1",
    "école fermée",
]


async def test_query_metacharacters_never_reach_the_database_as_syntax(store):
    await store.append([LogRecord(BASE + i, line, attributes={"x": i}) for i, line in enumerate(META_LINES)])
    for text in METACHARACTERS:
        try:
            query = parse_query(text)
        except QueryError:
            continue  # refused by the parser, before any store: fine
        page = await store.search(LogFilter(end=END, query=query), limit=100)
        assert page.total == len(page.records) == sum(page.histogram), text
    assert await found(store, "it's") == [META_LINES[0]]
    assert await found(store, "user_name") == [META_LINES[1]]
    assert await found(store, "a&b|c!d") == [META_LINES[2]]
    assert await found(store, '"c:\\temp\\x"') == [META_LINES[3]]
    assert await found(store, "NEAR") == [META_LINES[4]]
    assert await found(store, "back\\slash") == [META_LINES[5]]
    assert await found(store, "%s") == [META_LINES[7], META_LINES[0]]  # the word "s", as in "it's"
    assert await found(store, "robert'; DROP TABLE log_records") == []
    assert (await store.stats())["records"] == len(META_LINES)


# --- filters, order, histogram, volume, retention ---------------------------------------------------------


async def test_time_bounds_are_inclusive_and_start_may_be_open(corpus):
    assert await found(corpus, start=BASE + 3, end=BASE + 5) == messages(3, 4, 5)
    assert await found(corpus, start=None, end=BASE + 2) == messages(1, 2)
    assert await found(corpus, start=BASE + 8, end=BASE + 8) == messages(8)
    assert await found(corpus, start=BASE + 8.5, end=END) == []


async def test_services_and_min_severity_filter(corpus):
    assert await found(corpus, services=("api", "gateway")) == messages(1, 2, 3, 6)
    assert await found(corpus, min_severity="error") == messages(1, 5, 8)
    assert await found(corpus, "conn*", services=("payments",), min_severity="info") == messages(7)


async def test_an_or_query_stays_inside_the_range_and_filters(corpus):
    assert await found(corpus, "service:api OR severity:error", start=BASE + 2, end=BASE + 6) == messages(2, 5, 6)
    assert await found(corpus, "timeout OR service:api", services=("payments",)) == messages(5)
    assert await found(corpus, "timeout OR host:web-1", min_severity="error") == messages(1, 5)


async def test_records_are_newest_first_then_last_written_first_and_limited(store):
    await store.append([LogRecord(BASE + t, f"m{i}") for i, t in enumerate([5, 1, 5, 3, 5])])
    assert await found(store) == ["m4", "m2", "m0", "m3", "m1"]
    assert [r.message for r in await store.records(where(), limit=2)] == ["m4", "m2"]
    page = await store.search(where(), limit=3)
    assert [r.message for r in page.records] == ["m4", "m2", "m0"] and page.total == 5


async def test_search_counts_every_match_in_histogram_buckets(corpus):
    page = await corpus.search(where("service:api OR service:payments", start=BASE, end=BASE + 10), limit=2)
    assert page.total == 5 and len(page.records) == 2
    assert (page.origin, page.bucket_s) == (BASE, 1.0)
    assert page.histogram == [0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    page = await corpus.search(where(start=BASE, end=BASE + 600), limit=0, buckets=60)
    assert page.bucket_s == 10.0 and page.histogram[0] == 8 and sum(page.histogram) == page.total == 8
    assert page.records == []


async def test_an_open_start_histogram_begins_at_the_oldest_match(corpus):
    page = await corpus.search(where("refused", end=BASE + 60), limit=10)
    assert page.origin == BASE + 1 and page.total == 2 and sum(page.histogram) == 2
    empty = await corpus.search(where("nothing-matches-this", end=BASE + 60), limit=10)
    assert (empty.total, empty.origin, empty.histogram) == (0, BASE + 60, [0])


async def test_volume_counts_per_service_and_severity_per_bucket(corpus):
    counts = await corpus.volume(where(start=BASE, end=END), bucket_s=4)
    assert counts == {
        ("api", "error"): {0: 1}, ("api", "info"): {0: 1}, ("gateway", "warning"): {0: 1},
        ("deployer", "notice"): {1: 1}, ("payments", "error"): {1: 1}, ("api", "debug"): {1: 1},
        ("payments", "info"): {1: 1}, ("payments-eu", "critical"): {2: 1},
    }
    assert await corpus.volume(where("service:payments", start=None, end=END), bucket_s=BASE) == {
        ("payments", "error"): {1: 1}, ("payments", "info"): {1: 1}
    }


async def test_prune_deletes_older_records_only(corpus):
    assert await corpus.prune(BASE + 4) == 3
    assert await corpus.prune(BASE + 4) == 0
    assert await found(corpus, "refused") == []
    assert await found(corpus) == messages(4, 5, 6, 7, 8)
    assert (await corpus.stats())["oldest"] == BASE + 4


# --- the cross-check: one corpus, both stores, the same answers ------------------------------------------


def realistic_corpus(count: int, seed: int = 7) -> list[LogRecord]:
    rng = random.Random(seed)
    services = ["api", "web", "payments", "worker", "deployer", "gateway", "auth-service"]
    paths = ["/api/users", "/api/users/42", "/api/orders", "/healthz", "/v1/payments/charge", "/static/app.js"]
    templates = [
        lambda: f"GET {rng.choice(paths)} {rng.choice([200, 201, 304, 404, 500, 502])} {rng.randint(1, 3000)}ms",
        lambda: f"connection refused to 10.0.{rng.randint(0, 3)}.{rng.randint(1, 20)}:5432",
        lambda: f"deployment dpl_{rng.choice(['abc', 'xyz', 'a1b2'])}{rng.randint(1, 9)} promoted to production",
        lambda: f"Timeout after {rng.randint(1, 60)}s waiting for lock on user_{rng.randint(1, 50)}",
        lambda: f"payment declined for card ****{rng.randint(1000, 9999)} (code=insufficient_funds)",
        lambda: f"worker-{rng.randint(1, 4)} picked job {rng.randint(1, 10**6)} from queue:{rng.choice('mb')}",
        lambda: '{"level":"error","msg":"upstream closed connection","retry":' + str(rng.randint(0, 3)) + "}",
        lambda: f"user {rng.choice(['alice', 'ÉLODIE', 'José'])} logged in from {rng.choice(['Café', 'İstanbul'])}",
        lambda: rng.choice([
            "Ошибка соединения с базой данных", "日本語のログ 接続エラー", "🚀 deploy started", "ΟΔΟΣ κλειστή",
            "straße gesperrt 150µs", "e\u0301te\u0301 naïve façade", "🤖bot said hi", "tab\tseparated\tvalues",
        ]),
        lambda: f"OOMKilled container app-{rng.randint(1, 3)} exit code 137 (restart #{rng.randint(1, 5)})",
        lambda: f"TLS handshake error from [2001:db8::{rng.randint(1, 99)}]:443: EOF",
        lambda: f"NEAR limit: {rng.randint(80, 99)}% of quota used; see https://example.com/q?x=1&y=2",
    ]
    records = []
    for _ in range(count):
        status = rng.choice([200, 200, 404, 500, 502, "200", "503", True, None, 12.5, "n/a", "35ms"])
        attributes: dict = {"http": {"status": status, "method": rng.choice(["GET", "POST"]),
                                     "path": rng.choice(paths)}} if rng.random() < 0.6 else {}
        if rng.random() < 0.4:
            attributes["deployment_id"] = f"dpl_{rng.choice(['abc', 'xyz'])}{rng.randint(1, 3)}"
        if rng.random() < 0.3:
            attributes["duration_ms"] = rng.choice([1, 12.5, 250, 1200, 0.75])
        if rng.random() < 0.2:
            attributes["tags"] = rng.sample(["blue", "green", "canary", "eu-west-1"], 2)
        records.append(LogRecord(
            BASE + rng.randint(0, 3599) + rng.choice([0, 0.25, 0.5]), rng.choice(templates)(),
            rng.choice(["debug", "info", "info", "notice", "warning", "error", "critical"]),
            rng.choice(services), f"{rng.choice(['web', 'db', 'edge'])}-{rng.randint(1, 3)}", attributes,
        ))
    return records


CROSS_QUERIES = [
    "", "connection", "connection refused", '"connection refused"', "refused -connection", "conn*", "con*",
    "10.0.1.5", "10.0", "10.0.2", "5432", "dpl_abc1", "dpl", "abc*", "dpl_a*", "/api/users", "api/users*", "users",
    "/api/users/42", "42", "GET 404", '"GET /api/orders"', "timeout OR declined", "timeout -lock", "user_7",
    "insufficient_funds", "code=insufficient_funds", "****1234", "(timeout OR oom*) service:worker",
    "OOMKilled", "oomkilled", "137", "exit code 137", '"exit code"', "queue:m", "queue:b", "job",
    "upstream closed", '"level error"', "msg", "ошибка", "ОШИБКА базой", "日本語のログ", "接続エラー", "deploy",
    "bot", "🤖bot", "ΟΔΟΣ", "οδοσ", "strasse", "straße", "150µs", "µs", "ete", "naive facade", "elodie",
    "jose", "cafe", "istanbul", "tab", "separated values", "2001", "db8", "443", "EOF", "[2001:db8::1]",
    "NEAR", "quota", "https://example.com", "example.com/q", "x=1", "y", "80%", "blue", "canary",
    "eu-west-1", '"eu west"', "green blue", "tags:blue", "http.status:200", "http.status:500", "http.status:>=500",
    "http.status:<300", "http.status:>12", "http.status:12.5", "http.status:1", "http.status:true", "http.status:n*",
    "http.status:3*", "http.status:*", "http.method:get*", "http.method:GET", "http.method:POST -timeout",
    "http.path:/api/users*", "http.path:/api/users", "duration_ms:>100", "duration_ms:<=1", "duration_ms:0.75",
    "duration_ms:12.5", "deployment_id:dpl_abc1", "deployment_id:dpl_x*", "NOT deployment_id:dpl_abc1",
    "service:api", "service:auth*", "service:auth-service", "-service:api", "host:web-1", "host:db*",
    "severity:error", "severity:warning refused", "-severity:info", "level:crit OR service:gateway",
    "NOT connection", "-connection -deploy*", "(a OR b) OR (c AND NOT d)", "upstream OR http.status:502",
    "(refused OR declined) (service:api OR host:edge-1)", "NOT (timeout OR refused) severity:error",
    "promoted production", '"promoted to production"', '"to production dpl"', "promoted dpl*",
    "NOT (service:api OR NOT http.status:>=500)", "_", "a_b", "-_", "x:>nan", "x:<inf", "http.status:>-inf",
]


# Characters from many scripts and blocks, with the ones tokenizers disagree on most: combining marks,
# newer emoji (token characters to SQLite's Unicode 6.1 tables), private use, zero-width, case oddities.
SCRIPT_CHARACTERS = "".join(
    chr(code) for first, last in [
        (0x21, 0x7E), (0x21, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F),
        (0x2000, 0x206F), (0x3040, 0x30FF), (0x4E00, 0x4E3F), (0xE000, 0xE00F), (0x1F300, 0x1F32F),
        (0x1F900, 0x1F92F),
    ] for code in range(first, last + 1)
) + "\ufeff\u200b\u0130\u0131\u017f\u00df\u1e9e\u00b5\u03c2\ufffd\U00010400\U0001d400"


async def test_both_stores_cut_words_alike_in_any_script(both):
    rng = random.Random(3)

    def text(length: int) -> str:
        return "".join(rng.choice(SCRIPT_CHARACTERS) if rng.random() < 0.75 else " " for _ in range(length))

    corpus = [LogRecord(BASE + i, text(rng.randint(5, 50)), attributes={"k": text(rng.randint(0, 15))})
              for i in range(200)]
    for store in both:
        await store.append(corpus)
    queries = []
    while len(queries) < 200:
        words = (rng.choice(corpus).message + " " + rng.choice(corpus).attributes["k"]).split()
        word, other = rng.choice(words), rng.choice(words)
        text_ = rng.choice([word, word[: max(1, len(word) // 2)] + "*", '"' + " ".join(words[:3]) + '"',
                            f"{word} OR -{other}", f"{word} {other}"])
        try:
            queries.append((text_, where(text_)))
        except QueryError:
            continue  # refused by the parser
    differing = [
        text_ for text_, filter_ in queries
        if [key(r) for r in await both[0].records(filter_, limit=1000)]
        != [key(r) for r in await both[1].records(filter_, limit=1000)]
    ]
    assert differing == []


async def test_both_stores_agree_on_queries_full_of_metacharacters(both):
    for store in both:
        await store.append([LogRecord(BASE + i, line, attributes={"x": i}) for i, line in enumerate(META_LINES)])
    for text in METACHARACTERS:
        try:
            filter_ = where(text)
        except QueryError:
            continue
        assert [key(r) for r in await both[0].records(filter_, limit=100)] == [
            key(r) for r in await both[1].records(filter_, limit=100)], text


def key(record: StoredRecord) -> tuple[float, str]:
    """What identifies a record across stores (ids are each store's own)."""
    return record.time, record.message


def assert_same_page(left: SearchPage, right: SearchPage, label: str) -> None:
    assert [key(r) for r in left.records] == [key(r) for r in right.records], label
    assert (left.total, left.origin, left.bucket_s, left.histogram) == (
        right.total, right.origin, right.bucket_s, right.histogram), label


async def test_both_stores_find_the_same_records_for_every_query(both):
    sqlite, postgres = both
    corpus = realistic_corpus(1500)
    for store in both:
        await store.append(corpus[:700])
        await store.append(corpus[700:])
    differing = []
    for text in CROSS_QUERIES:
        filter_ = where(text, start=None, end=END)
        left = await sqlite.records(filter_, limit=5000)
        right = await postgres.records(filter_, limit=5000)
        if [key(r) for r in left] != [key(r) for r in right]:
            differing.append((text, len(left), len(right)))
    assert differing == []
    matched = {text: len(await sqlite.records(where(text), limit=5000)) for text in CROSS_QUERIES}
    assert sum(1 for count in matched.values() if 0 < count < len(corpus)) > len(CROSS_QUERIES) * 2 // 3, matched


async def test_both_stores_agree_on_pages_histograms_and_volume(both):
    sqlite, postgres = both
    corpus = realistic_corpus(800, seed=11)
    for store in both:
        await store.append(corpus)
    cases = [
        where("connection", start=None, end=END),
        where("(service:api OR severity:error) -healthz", start=BASE + 600, end=BASE + 1800),
        where("-healthz", start=BASE, end=END, services=("api", "web"), min_severity="warning"),
        where("http.status:>=500", start=BASE + 0.25, end=BASE + 3000.5),
    ]
    for filter_ in cases:
        for buckets in (1, 7, 60, 500):
            assert_same_page(await sqlite.search(filter_, limit=25, buckets=buckets),
                             await postgres.search(filter_, limit=25, buckets=buckets), f"{filter_} {buckets}")
        for bucket_s in (1.0, 60.0, 333.3):
            expected = await sqlite.volume(filter_, bucket_s=bucket_s)
            assert await postgres.volume(filter_, bucket_s=bucket_s) == expected, f"{filter_} {bucket_s}"
    assert await sqlite.prune(BASE + 1800) == await postgres.prune(BASE + 1800)
    assert {k: v for k, v in (await sqlite.stats()).items() if k != "backend"} == {
        k: v for k, v in (await postgres.stats()).items() if k != "backend"}


# --- PostgreSQL only: schema, connections, errors ----------------------------------------------------------


async def test_reopening_keeps_the_records_and_the_schema(postgres_url):
    url = create_schema(postgres_url)
    first = await opened(PostgresLogStore(url))
    await first.append(CORPUS)
    await first.close()
    second = await opened(PostgresLogStore(url))
    try:
        assert (await second.stats())["records"] == len(CORPUS)
        assert await found(second, "refused") == messages(1, 3)
    finally:
        await second.close()


async def test_a_password_url_works_and_a_wrong_password_never_shows(postgres_url):
    url = create_database(postgres_url)
    password, wrong = "Corr3ct-h0rse-battery", "S3cr3t-wr0ng-staple"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE log_writer LOGIN PASSWORD '{password}'")
        conn.execute("GRANT ALL ON SCHEMA public TO log_writer")
    database_url = url.replace("postgres@", "log_writer:{}@")
    store = await opened(PostgresLogStore(database_url.format(password)))
    try:
        await store.append(CORPUS[:1])
        assert (await store.stats())["records"] == 1
    finally:
        await store.close()
    bad = PostgresLogStore(database_url.format(wrong))
    with pytest.raises(UpstreamError) as caught:
        await bad.open()
    assert caught.value.service == "postgresql" and "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in caught.value.public_message


async def test_an_unreachable_server_is_a_retryable_upstream_error_without_the_url():
    url = f"postgresql://someone:S3cr3t-pw-123@127.0.0.1:{free_port()}/logs?connect_timeout=2"
    store = PostgresLogStore(url)
    with pytest.raises(UpstreamError) as caught:
        await store.open()
    assert caught.value.retryable and "S3cr3t-pw-123" not in str(caught.value) and url not in str(caught.value)


@pytest.mark.parametrize("url", ["postgresql://u:S3cr3t%zz@h/db", "postgresql://u:S3cr3t-pw@[::1/db", "S3cr3t-pw"])
async def test_a_url_that_does_not_parse_is_refused_without_quoting_it(url):
    with pytest.raises(ConfigError) as caught:
        await PostgresLogStore(url).open()
    assert "S3cr3t" not in str(caught.value)


async def test_a_database_error_becomes_an_upstream_error(postgres_url):
    url = create_schema(postgres_url)
    store = await opened(PostgresLogStore(url))
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE log_records")
        with pytest.raises(UpstreamError) as caught:
            await store.search(where("refused"), limit=10)
        assert not caught.value.retryable and "log_records" in str(caught.value)
        with pytest.raises(UpstreamError):
            await store.append(CORPUS[:1])
    finally:
        await store.close()


async def test_a_dropped_connection_is_reopened_on_the_next_call(postgres_url):
    url = create_database(postgres_url)
    store = await opened(PostgresLogStore(url))
    try:
        await store.append(CORPUS)
        assert (await store.stats())["records"] == len(CORPUS)  # both connections open
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        # The call that finds its connection dead fails, retryably; the next one reconnects.
        for call in (store.stats, lambda: store.append(CORPUS[:1])):
            with pytest.raises(UpstreamError) as caught:
                await call()
            assert caught.value.retryable
        assert (await store.stats())["records"] == len(CORPUS)
        assert await store.append(CORPUS[:1]) == 1
        assert (await store.stats())["records"] == len(CORPUS) + 1
    finally:
        await store.close()
