"""The log index in PostgreSQL, for a deployment that already runs one: same answers as the SQLite store.

One table, `log_records`, holds the fields, the attributes (jsonb) and a `words` tsvector with a GIN index.
The store computes `words` itself rather than with a generated `to_tsvector('simple', …)` column because
PostgreSQL's parser splits text its own way: it keeps `10.0.0.1` and `/api/users` whole, reads `web-1` as
`web` and `-1`, folds no case outside ASCII in a C-locale database and keeps diacritics. A query that finds
a record in SQLite must find it here, so words are cut by SQLite's own unicode61 tokenizer (the one the
SQLite store indexes with), and each text search becomes a tsquery over the same lexemes.

`time` is double precision, the SQLite store's type: the same seconds back, and the same arithmetic for
histogram buckets. Ids come from an identity column, so several ingesting processes can share the table.

A text search matches the message or the attribute values, never a phrase that runs from one into the
other (one position is left empty between them). Limits of tsvector, not of the search language: a lexeme
keeps its first 2046 bytes (queries are cut alike), positions stop at 16383 and 256 per word, so a phrase
past the 16383rd word of one record is not found; words past 1 MB of distinct text in one record are
not indexed. PostgreSQL text holds no NUL character: it is stored as U+FFFD.

A record with a sender's key (`LogRecord.key`) is written once: `source_key` has a unique index and
keyed records are inserted with ON CONFLICT DO NOTHING, so two processes delivering the same key at once
store it once.

The URL may carry a password: it is never put in an error or a log line.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ops_agent.errors import ConfigError, UpstreamError
from ops_agent.redact import Redactor
from ops_agent.tools.logs.index.query import And, Field, Node, Not, Or, Text, is_text_only
from ops_agent.tools.logs.index.store import LogFilter, SearchPage, StoredRecord, bucket_width, flat_attribute_text
from ops_agent.tools.logs.record import SEVERITIES, LogRecord, severity_rank

__all__ = ["PostgresLogStore"]

SERVICE = "postgresql"
COMPONENT = "logs"
_MIGRATION_LOCK = 0x6F70735F6167656E  # "ops_agen": the advisory lock every ops-agent migration takes
_MIGRATIONS = [
    """
    CREATE TABLE log_records (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time double precision NOT NULL,
        severity smallint NOT NULL,
        service text NOT NULL,
        host text NOT NULL,
        message text NOT NULL,
        attributes jsonb NOT NULL DEFAULT '{}',
        words tsvector NOT NULL
    );
    CREATE INDEX log_records_time ON log_records (time);
    CREATE INDEX log_records_service_time ON log_records (service, time);
    CREATE INDEX log_records_words ON log_records USING gin (words);
    """,
    """
    ALTER TABLE log_records ADD COLUMN source_key text;
    CREATE UNIQUE INDEX log_records_source_key ON log_records (source_key) WHERE source_key IS NOT NULL;
    """,
]
_SELECT = "SELECT id, time, severity, service, host, message, attributes FROM log_records"
_NEWEST_FIRST = "ORDER BY time DESC, id DESC LIMIT %s"
_COPY = "COPY log_records (time, severity, service, host, message, attributes, words) FROM STDIN"
# COPY can't skip a conflict: keyed records go in as one INSERT of arrays instead.
_INSERT_KEYED = (
    "INSERT INTO log_records (time, severity, service, host, message, attributes, words, source_key) "
    "SELECT * FROM unnest(%s::float8[], %s::int2[], %s::text[], %s::text[], %s::text[], %s::text[]::jsonb[], "
    "%s::text[]::tsvector[], %s::text[]) "
    "ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO NOTHING"
)


class PostgresLogStore:
    def __init__(self, url: str) -> None:
        self._url = url  # may hold a password: never in an error or a log line
        self._redactor = Redactor()
        # Ingest writes while the agent searches: one connection each, so a search never waits for a batch.
        self._writer = _Connection(url, read_only=False)
        self._reader = _Connection(url, read_only=True)

    async def open(self) -> None:
        try:
            password = conninfo_to_dict(self._url).get("password")
        except psycopg.Error:
            # psycopg's own message would quote the URL, password included.
            raise ConfigError(
                "the PostgreSQL URL of the log index does not parse (not shown: it may hold a password)"
            ) from None
        self._redactor = Redactor([self._url, *([password] if password else [])])
        async with self._write("create the log tables") as conn:
            await _migrate(conn)

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()

    async def append(self, records: list[LogRecord]) -> int:
        if not records:
            return 0
        plain: list[LogRecord] = []
        keyed: dict[str, LogRecord] = {}
        for record in records:
            if (key := record.key) is None:
                plain.append(record)
            else:
                keyed.setdefault(key, record)  # a key twice in one batch: the first is kept
        # Tokenizing a big batch is CPU work: off the event loop.
        rows = await asyncio.to_thread(_rows, plain + list(keyed.values()))
        written = len(plain)
        async with self._write("write log records") as conn, conn.transaction():
            if plain:
                async with conn.cursor().copy(_COPY) as copy:
                    for row in rows[: len(plain)]:
                        await copy.write_row(row)
            if keyed:
                columns = [list(column) for column in zip(*rows[len(plain) :], strict=True)]
                cursor = await conn.execute(_INSERT_KEYED, [*columns, list(keyed)])
                written += cursor.rowcount
        return written

    async def known_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys of `keys` already stored (records are written once per key)."""
        if not keys:
            return set()
        async with self._read("look up record keys") as conn:
            cursor = await conn.execute(
                "SELECT source_key FROM log_records WHERE source_key = ANY(%s)", [list(keys)]
            )
            return {row[0] for row in await cursor.fetchall()}

    async def search(self, where: LogFilter, *, limit: int, buckets: int = 60) -> SearchPage:
        clause, params = _where(where)
        async with self._read("search logs") as conn, conn.transaction():  # one snapshot: total and rows agree
            start = where.start
            if start is None:
                cursor = await conn.execute(f"SELECT min(time) FROM log_records WHERE {clause}", params)
                row = await cursor.fetchone()
                start = row[0] if row is not None and row[0] is not None else where.end
            width = bucket_width(start, where.end, buckets)
            histogram = [0] * max(1, int((where.end - start) // width) + 1)
            cursor = await conn.execute(
                # trunc, not a cast (which rounds): SQLite's CAST(… AS INTEGER) truncates.
                f"SELECT trunc((time - %s) / %s)::bigint, count(*) FROM log_records WHERE {clause} GROUP BY 1",
                [start, width, *params],
            )
            for bucket, count in await cursor.fetchall():
                histogram[min(max(bucket, 0), len(histogram) - 1)] += count
            cursor = await conn.execute(f"{_SELECT} WHERE {clause} {_NEWEST_FIRST}", [*params, _limit(limit)])
            rows = await cursor.fetchall()
        return SearchPage(sum(histogram), [_record(row) for row in rows], start, width, histogram)

    async def records(self, where: LogFilter, *, limit: int) -> list[StoredRecord]:
        clause, params = _where(where)
        async with self._read("read log records") as conn:
            cursor = await conn.execute(f"{_SELECT} WHERE {clause} {_NEWEST_FIRST}", [*params, _limit(limit)])
            rows = await cursor.fetchall()
        return [_record(row) for row in rows]

    async def volume(self, where: LogFilter, *, bucket_s: float) -> dict[tuple[str, str], dict[int, int]]:
        clause, params = _where(where)
        origin = where.start if where.start is not None else 0.0
        async with self._read("count log volume") as conn:
            cursor = await conn.execute(
                f"SELECT service, severity, trunc((time - %s) / %s)::bigint, count(*) "
                f"FROM log_records WHERE {clause} GROUP BY 1, 2, 3",
                [origin, bucket_s, *params],
            )
            rows = await cursor.fetchall()
        counts: dict[tuple[str, str], dict[int, int]] = {}
        for service, severity, bucket, count in rows:
            counts.setdefault((service, SEVERITIES[severity]), {})[bucket] = count
        return counts

    async def prune(self, before: float) -> int:
        async with self._write("delete old log records") as conn:
            cursor = await conn.execute("DELETE FROM log_records WHERE time < %s", [before])
            return cursor.rowcount

    async def stats(self) -> dict[str, Any]:
        async with self._read("count log records") as conn:
            cursor = await conn.execute("SELECT count(*), min(time), max(time) FROM log_records")
            count, oldest, newest = await cursor.fetchone() or (0, None, None)
        return {"backend": "postgresql", "records": count, "oldest": oldest, "newest": newest}

    def _write(self, action: str) -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
        return self._use(self._writer, action)

    def _read(self, action: str) -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
        return self._use(self._reader, action)

    @asynccontextmanager
    async def _use(self, connection: _Connection, action: str) -> AsyncIterator[psycopg.AsyncConnection]:
        """The seam: every psycopg error becomes an UpstreamError whose text holds no part of the URL."""
        try:
            async with connection.use() as conn:
                yield conn
        except psycopg.Error as exc:
            detail = self._redactor.text(_describe(exc))
            # OperationalError: the connection or the server failed (lost, shut down, cancelled, out of
            # space), not the statement; the same call may succeed later, on a new connection.
            retryable = isinstance(exc, psycopg.OperationalError)
            raise UpstreamError(SERVICE, f"could not {action}: {detail}", retryable=retryable) from exc


class _Connection:
    """One connection used by one task at a time, opened on first use and again after it was lost."""

    def __init__(self, url: str, *, read_only: bool) -> None:
        self._url = url
        self._read_only = read_only
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection | None = None

    @asynccontextmanager
    async def use(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            try:
                yield self._conn
            except psycopg.Error:
                raise  # the server answered (a lost connection psycopg has closed itself)
            except BaseException:
                # Cancelled (a tool timeout) or failed in our code mid-statement: its state is unknown.
                await self._discard()
                raise

    async def _connect(self) -> psycopg.AsyncConnection:
        # Autocommit: a statement outside `conn.transaction()` never leaves a transaction open.
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        if self._read_only:
            await conn.set_read_only(True)
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        return conn

    async def close(self) -> None:
        async with self._lock:
            await self._discard()

    async def _discard(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def _describe(exc: psycopg.Error) -> str:
    """What failed, for a person: the server's own words when it answered, else the client's first line."""
    message = exc.diag.message_primary if exc.sqlstate else None
    message = message or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{message} [{exc.sqlstate}]" if exc.sqlstate else message


async def _migrate(conn: psycopg.AsyncConnection) -> None:
    """Apply the migrations not yet applied, in one transaction, under a lock so two processes can't race."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS ops_agent_schema_versions "
            "(component text PRIMARY KEY, version integer NOT NULL)"
        )
        cursor = await conn.execute("SELECT version FROM ops_agent_schema_versions WHERE component = %s", [COMPONENT])
        row = await cursor.fetchone()
        applied = row[0] if row is not None else 0
        for version, script in enumerate(_MIGRATIONS[applied:], start=applied + 1):
            await conn.execute(script)  # our own constant: several statements, no parameters
            await conn.execute(
                "INSERT INTO ops_agent_schema_versions (component, version) VALUES (%s, %s) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                [COMPONENT, version],
            )


def _limit(limit: int) -> int | None:
    return None if limit < 0 else limit  # SQLite's LIMIT -1 is no limit, PostgreSQL's LIMIT NULL


def _record(row: tuple[Any, ...]) -> StoredRecord:
    return StoredRecord(
        id=row[0], time=row[1], severity=SEVERITIES[row[2]], service=row[3], host=row[4], message=row[5],
        attributes=row[6] or {},
    )


# --- words: SQLite's tokenizer, PostgreSQL's lexemes --------------------------------------------------

# The SQLite store's tokenizer; both stores must cut text into the same words.
_TOKENIZER = "unicode61 remove_diacritics 2"
# What that tokenizer does to ASCII (its word characters there are letters and digits, folded to lower
# case): the fast path, since most log text is ASCII.
_ASCII_WORD = re.compile(r"[0-9a-z]+")
_LEXEME_BYTES = 2046  # tsvector refuses longer lexemes
_MAX_POSITION = 16383  # tsvector's last position
_VECTOR_BYTES = 1_000_000  # tsvector holds at most 1 MB of distinct lexemes


def _words(texts: Sequence[str]) -> list[list[str]]:
    """The words of each text exactly as the SQLite store's FTS5 index holds them."""
    words: list[list[str]] = [_ASCII_WORD.findall(text.lower()) if text.isascii() else [] for text in texts]
    others = [(i, text) for i, text in enumerate(texts) if not text.isascii()]
    if others:
        # Beyond ASCII the rules are Unicode 6.1 tables (letters, digits, private use, some marks; Latin
        # diacritics removed): ask the tokenizer itself rather than copy its tables.
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute(f"CREATE VIRTUAL TABLE texts USING fts5 (body, tokenize = '{_TOKENIZER}')")
            conn.execute("CREATE VIRTUAL TABLE words USING fts5vocab (texts, 'instance')")
            conn.executemany("INSERT INTO texts (rowid, body) VALUES (?, ?)", others)
            for doc, term in conn.execute("SELECT doc, term FROM words ORDER BY doc, offset"):
                words[doc].append(term)
        finally:
            conn.close()
    return [[_lexeme(word) for word in text_words] for text_words in words]


def _lexeme(word: str) -> str:
    if len(word) * 4 <= _LEXEME_BYTES:
        return word
    return word.encode()[:_LEXEME_BYTES].decode(errors="ignore")


def _tsvector(message: list[str], attributes: list[str]) -> str:
    """A tsvector literal: the message's words from position 1, the attributes' after one empty position,
    so that no phrase runs from the message into the attributes (FTS5 keeps them in separate columns)."""
    positions: dict[str, list[int]] = {}
    size = 0
    for position, word in enumerate([*message, "", *attributes], start=1):
        if not word:
            continue
        places = positions.get(word)
        if places is None:
            size += len(word.encode())
            if size > _VECTOR_BYTES:
                continue
            places = positions[word] = []
        if len(places) < 256 and (not places or places[-1] < _MAX_POSITION):
            places.append(min(position, _MAX_POSITION))
    return " ".join(f"{_quote(word)}:{','.join(map(str, places))}" for word, places in positions.items())


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _rows(records: list[LogRecord]) -> list[tuple[Any, ...]]:
    texts: list[str] = []
    for record in records:
        texts.append(record.message)
        texts.append(flat_attribute_text(record.attributes) if record.attributes else "")
    words = _words(texts)
    return [
        (
            record.time,
            severity_rank(record.severity),
            _no_nul(record.service),
            _no_nul(record.host),
            _no_nul(record.message),
            _json(record.attributes),
            _tsvector(words[2 * i], words[2 * i + 1]),
        )
        for i, record in enumerate(records)
    ]


def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _json(attributes: dict[str, Any]) -> str:
    """The attributes as the SQLite store writes them, minus what jsonb refuses (NUL, NaN, infinities)."""
    try:
        text = json.dumps(attributes, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_jsonb_safe(json.loads(json.dumps(attributes, default=str))), separators=(",", ":"))
    if "\\u0000" in text:
        text = json.dumps(_jsonb_safe(json.loads(text)), separators=(",", ":"))
    return text


def _jsonb_safe(value: Any) -> Any:
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # the text JSON would have had: "NaN", "Infinity", "-Infinity"
    if isinstance(value, dict):
        return {_no_nul(key): _jsonb_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonb_safe(item) for item in value]
    return value


# --- compiling a query to SQL ------------------------------------------------------------------------

# What SQLite's CAST(json_extract(attributes, path) AS TEXT), which `name:value` compares, gives for a
# jsonb value {v}: a string's text, a number's digits, 1 or 0 for a boolean, NULL for null, JSON otherwise.
_ATTRIBUTE_TEXT = (
    "CASE jsonb_typeof({v}) WHEN 'boolean' THEN CASE WHEN {v} = 'true' THEN '1' ELSE '0' END ELSE {v} #>> '{}' END"
)
# SQLite's CAST(text AS REAL), which `name:>n` compares: the longest leading number of {v} after white
# space, 0 when there is none; and CAST(json_extract(…) AS REAL) for a jsonb value.
_LEADING_NUMBER = (
    "COALESCE(substring({v} from '^[[:space:]]*([-+]?(?:[0-9]+[.]?[0-9]*|[.][0-9]+)(?:[eE][-+]?[0-9]+)?)')"
    "::numeric, 0)"
)
_ATTRIBUTE_NUMBER = (
    "CASE jsonb_typeof({v}) WHEN 'number' THEN ({v})::numeric "
    "WHEN 'boolean' THEN CASE WHEN {v} = 'true' THEN 1 ELSE 0 END "
    "WHEN 'string' THEN " + _LEADING_NUMBER.replace("{v}", "({v} #>> '{}')") + " "
    "WHEN 'object' THEN 0 WHEN 'array' THEN 0 END"  # NULL for a JSON null or a missing attribute
)
_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _where(where: LogFilter) -> tuple[str, list[Any]]:
    clauses = ["time <= %s"]
    params: list[Any] = [where.end]
    if where.start is not None:
        clauses.append("time >= %s")
        params.append(where.start)
    if where.min_severity is not None:
        clauses.append("severity >= %s")
        params.append(severity_rank(where.min_severity))
    if where.services:
        clauses.append("service = ANY(%s)")
        params.append(list(where.services))
    if where.query is not None:
        texts = list(dict.fromkeys(_texts(where.query)))
        queries = dict(zip(texts, _tsqueries(texts), strict=True))
        node = _without_empty_texts(where.query, queries)
        if node is not True:
            sql, query_params = ("FALSE", []) if node is False else _sql(node, queries)
            clauses.append(sql)
            params.extend(query_params)
    return " AND ".join(f"({clause})" for clause in clauses), params


def _texts(node: Node) -> Iterable[Text]:
    match node:
        case Text():
            yield node
        case Not(inner):
            yield from _texts(inner)
        case And(nodes) | Or(nodes):
            for child in nodes:
                yield from _texts(child)


def _tsqueries(texts: list[Text]) -> list[str | None]:
    """Each text as a tsquery literal over the same words FTS5 would look up (None: it has no words).

    A term with several words (`10.0.0.1`) is a phrase, as in FTS5; a prefix applies to the last word."""
    queries: list[str | None] = []
    for text, words in zip(texts, _words([text.words for text in texts]), strict=True):
        if not words:
            queries.append(None)
            continue
        queries.append(" <-> ".join(_quote(word) for word in words) + (":*" if text.prefix else ""))
    return queries


def _without_empty_texts(node: Node, queries: dict[Text, str | None]) -> Node | bool:
    """`node` with the texts that have no words folded away: FTS5 matches no record with such a phrase."""
    match node:
        case Text():
            return node if queries[node] is not None else False
        case Not(inner):
            folded = _without_empty_texts(inner, queries)
            return (not folded) if isinstance(folded, bool) else Not(folded)
        case And(nodes) | Or(nodes):
            absorbing = isinstance(node, Or)  # True absorbs an OR, False an AND
            kept: list[Node] = []
            for child in nodes:
                folded = _without_empty_texts(child, queries)
                if folded is absorbing:
                    return absorbing
                if not isinstance(folded, bool):
                    kept.append(folded)
            if not kept:
                return not absorbing
            return kept[0] if len(kept) == 1 else type(node)(tuple(kept))
    return node


def _sql(node: Node, queries: dict[Text, str | None]) -> tuple[str, list[Any]]:
    if is_text_only(node):
        tsquery, params = _tsquery(node, queries)
        return f"words @@ ({tsquery})", params
    match node:
        case Field():
            return _field(node)
        case Not(inner):
            sql, params = _sql(inner, queries)
            return f"NOT ({sql})", params
        case And(nodes) | Or(nodes):
            # The text parts are one tsquery (one index search); the fields filter alongside.
            joiner, tsquery_joiner = (" AND ", " && ") if isinstance(node, And) else (" OR ", " || ")
            text = [n for n in nodes if is_text_only(n)]
            parts = [_sql(n, queries) for n in nodes if not is_text_only(n)]
            if text:
                tsqueries = [_tsquery(n, queries) for n in text]
                tsquery = tsquery_joiner.join(f"({sql})" for sql, _ in tsqueries)
                parts.insert(0, (f"words @@ ({tsquery})", [p for _, ps in tsqueries for p in ps]))
            return joiner.join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]
    raise AssertionError(f"unknown query node {node!r}")


def _tsquery(node: Node, queries: dict[Text, str | None]) -> tuple[str, list[Any]]:
    """A tsquery expression for a text-only subtree: each text a parameter, combined with && || !!."""
    match node:
        case Text():
            return "%s::tsquery", [queries[node]]
        case Not(inner):
            sql, params = _tsquery(inner, queries)
            return f"!!({sql})", params
        case And(nodes) | Or(nodes):
            joiner = " && " if isinstance(node, And) else " || "
            parts = [_tsquery(n, queries) for n in nodes]
            return joiner.join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]
    raise AssertionError(f"not a text query: {node!r}")


def _field(node: Field) -> tuple[str, list[Any]]:
    """A field test with the SQLite store's meaning (its CAST and LIKE rules), NULL where it is NULL."""
    if node.name == "severity":
        return "severity >= %s", [severity_rank(node.value)]
    if node.name in ("service", "host"):
        text, number = (node.name, []), _substitute(_LEADING_NUMBER, node.name, [])
    else:
        parts = [part.replace('"', "") for part in node.name.split(".")]
        value = "attributes" + " -> %s::text" * len(parts), parts
        if len(parts) > 1:  # a.b: nested, or else a key that holds the dot itself (ECS-style flat keys)
            value = f"COALESCE({value[0]}, attributes -> %s::text)", [*parts, ".".join(parts)]
        text, number = _substitute(_ATTRIBUTE_TEXT, *value), _substitute(_ATTRIBUTE_NUMBER, *value)
    if node.operator == "=":
        if node.value.endswith("*"):
            # SQLite's LIKE, which the SQLite store uses for a prefix, ignores the case of ASCII letters.
            lower = f"translate({text[0]}, '{_ASCII_UPPER}', '{_ASCII_UPPER.lower()}')"
            return f"starts_with({lower}, %s)", [*text[1], _ascii_lower(node.value[:-1])]
        return f"({text[0]}) = %s", [*text[1], node.value]
    # Compared as numeric, which no attribute value can overflow; the bound is the double SQLite binds, and
    # NaN is bound as NULL there (no match) where PostgreSQL would order it above every number.
    bound = float(node.value)
    return f"({number[0]}) {node.operator} %s", [*number[1], None if math.isnan(bound) else Decimal(repr(bound))]


def _substitute(template: str, value: str, params: list[Any]) -> tuple[str, list[Any]]:
    """`template` with each {v} replaced by the SQL `value`, and its parameters repeated to match."""
    pieces = template.split("{v}")
    return value.join(pieces), params * (len(pieces) - 1)


def _ascii_lower(text: str) -> str:
    return text.translate(str.maketrans(_ASCII_UPPER, _ASCII_UPPER.lower()))
