"""Inbound webhooks, processed once: Standard Webhooks on /ingest/logs, Vercel drain redeliveries.

A real server in a subprocess, real HTTP, the log index read back from its own database (SQLite, and
PostgreSQL for the restart case). Signatures are made with our outbound signer, the one the notify tests
check against the spec's test vector.

1. A signed message is accepted without a bearer token; any forged, truncated, lengthened or
   wrongly keyed signature is 401, and one valid signature among several is enough (key rotation).
2. A webhook-timestamp outside the tolerance, either way, is 400 naming webhook-timestamp.
3. A webhook-id already stored answers {"accepted": 0, "duplicate": true} and writes nothing, also when
   re-signed with a fresh timestamp, also when the copies arrive at once.
4. A Vercel drain redelivery adds no records, also after the server restarts on the same data.
5. No secret appears in any answer or in the server's log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest

from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.logs.index import sqlite_store
from ops_agent.tools.logs.index.postgres_store import PostgresLogStore
from ops_agent.tools.logs.index.sqlite_store import SqliteLogStore
from ops_agent.tools.logs.ingest.vercel_logs import drain_records
from ops_agent.tools.logs.record import LogRecord
from ops_agent.tools.notify import sign_webhook, signature_headers
from tests.postgres import create_schema
from tests.processes import stop
from tests.test_mcp_transports import HttpServer, _start_http_server

ROOT = Path(__file__).resolve().parents[1]
# Recent: the fixture's own 2019 timestamp is past log retention, and a restart prunes such records (and
# their keys) at once.
DRAIN = {
    **json.loads((ROOT / "tests/fixtures/vercel/logDrainDelivery.json").read_text())["records"][0],
    "timestamp": int(time.time() * 1000),
}
WEBHOOK_KEY = secrets.token_bytes(32)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
DRAIN_SECRET = f"drain-{secrets.token_hex(16)}"
INGEST_TOKEN = f"ingest-{secrets.token_hex(16)}"
SECRETS = (WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), DRAIN_SECRET, INGEST_TOKEN)


def _config(**logs: Any) -> dict[str, Any]:
    return {"logs": {
        "ingest_token": INGEST_TOKEN, "drain_secret": DRAIN_SECRET, "webhook_secret": WEBHOOK_SECRET, **logs,
    }}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    started = _start_http_server(tmp_path_factory.mktemp("inbound-webhooks"), _config())
    try:
        yield started
    finally:
        stop(started.process)


# -- helpers ----------------------------------------------------------------------------------------------


def _marker() -> str:
    """A word no other test writes, to count one test's records."""
    return f"mark{uuid.uuid4().hex[:12]}"


def _lines(marker: str, count: int = 2) -> bytes:
    return "\n".join(json.dumps({"level": "error", "msg": f"{marker} line {i}"}) for i in range(count)).encode()


def _signed(body: bytes, msg_id: str | None = None, *, timestamp: int | None = None,
            secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return signature_headers(secret, msg_id or f"msg_{uuid.uuid4().hex}", stamp, body)


def _post_signed(server: HttpServer, body: bytes, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.post(f"{server.base}/ingest/logs?service=hooks", content=body, headers=headers)


def _post_drain(server: HttpServer, entries: list[dict[str, Any]]) -> httpx2.Response:
    body = json.dumps(entries).encode()
    signature = hmac.new(DRAIN_SECRET.encode(), body, hashlib.sha1).hexdigest()
    return httpx2.post(f"{server.base}/ingest/vercel", content=body, headers={"x-vercel-signature": signature})


def _drain_entries(marker: str, count: int) -> list[dict[str, Any]]:
    return [{**DRAIN, "id": f"{marker}-{i}", "message": f"{marker} drain {i}"} for i in range(count)]


def _count(logs_db: Path, marker: str) -> int:
    conn = sqlite3.connect(logs_db, timeout=5)
    try:
        return conn.execute(
            "SELECT count(*) FROM log_records r JOIN log_fts f ON f.rowid = r.id WHERE f.message LIKE ?",
            (f"{marker}%",),
        ).fetchone()[0]
    finally:
        conn.close()


def _count_postgres(url: str, marker: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM log_records WHERE message LIKE %s", [f"{marker}%"]).fetchone()[0]


def _logs_db(server: HttpServer) -> Path:
    return server.db.with_name("logs.db")


def _assert_no_secret(*responses: httpx2.Response) -> None:
    for response in responses:
        seen = response.text + json.dumps(dict(response.headers))
        for secret in SECRETS:
            assert secret not in seen


# -- Standard Webhooks on /ingest/logs --------------------------------------------------------------------


def test_a_signed_message_is_accepted_without_a_bearer_token(server: HttpServer) -> None:
    marker = _marker()
    body = _lines(marker, 3)
    response = _post_signed(server, body, _signed(body))
    assert response.status_code == 200 and response.json() == {"accepted": 3}
    assert _count(_logs_db(server), marker) == 3
    # Within the tolerance either way: a sender's clock may run a little fast or slow.
    for skew_s in (-120, 120):
        body = _lines(marker + f"skew{skew_s + 200}", 1)
        assert _post_signed(server, body, _signed(body, timestamp=int(time.time()) + skew_s)).json() == {"accepted": 1}


def _forgeries(body: bytes, msg_id: str, stamp: int) -> dict[str, str]:
    good = sign_webhook(WEBHOOK_SECRET, msg_id, stamp, body)
    digest = base64.b64decode(good[3:])
    return {
        "another secret": sign_webhook(OTHER_SECRET, msg_id, stamp, body),
        "another body": sign_webhook(WEBHOOK_SECRET, msg_id, stamp, body + b"\n"),
        "another id": sign_webhook(WEBHOOK_SECRET, msg_id + "x", stamp, body),
        "another timestamp": sign_webhook(WEBHOOK_SECRET, msg_id, stamp - 1, body),
        "truncated digest": "v1," + base64.b64encode(digest[:16]).decode(),
        "one byte short": "v1," + base64.b64encode(digest[:-1]).decode(),
        "one byte longer": "v1," + base64.b64encode(digest + b"\x00").decode(),
        "empty digest": "v1,",
        "not base64": "v1," + good[3:-4] + "!!!!",
        "hex, not base64": "v1," + digest.hex(),
        "right digest, unknown version": "v1a," + good[3:],
        "right digest, no version": good[3:],
        "the secret itself": "v1," + WEBHOOK_SECRET.removeprefix("whsec_"),
        "the key itself": "v1," + base64.b64encode(WEBHOOK_KEY).decode(),
        "several, none valid": " ".join([sign_webhook(OTHER_SECRET, msg_id, stamp, body), "v1,AAAA", "v2," + good[3:]]),
    }


def test_any_forged_signature_is_refused_and_writes_nothing(server: HttpServer) -> None:
    marker = _marker()
    body = _lines(marker)
    msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    answers = []
    for name, signature in _forgeries(body, msg_id, stamp).items():
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}
        response = _post_signed(server, body, headers)
        answers.append(response)
        assert response.status_code == 401, name
        assert "webhook-signature" in response.json()["error"], name
    # A valid bearer token does not rescue a forged signature: a signed request is judged by its signature.
    both = {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": "v1,AAAA",
            "Authorization": f"Bearer {INGEST_TOKEN}"}
    answers.append(_post_signed(server, body, both))
    assert answers[-1].status_code == 401
    assert _count(_logs_db(server), marker) == 0
    _assert_no_secret(*answers)
    # The same id was never stored, so the genuine message still goes in afterwards.
    genuine = {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
               "webhook-signature": sign_webhook(WEBHOOK_SECRET, msg_id, stamp, body)}
    assert _post_signed(server, body, genuine).json() == {"accepted": 2}


def test_one_valid_signature_among_several_is_enough(server: HttpServer) -> None:
    marker = _marker()
    body = _lines(marker)
    msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    good = sign_webhook(WEBHOOK_SECRET, msg_id, stamp, body)
    rotated = " ".join(["v1a,c2lnbmVk", sign_webhook(OTHER_SECRET, msg_id, stamp, body), "v1,AAAA", good])
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": rotated}
    assert _post_signed(server, body, headers).json() == {"accepted": 2}
    assert _count(_logs_db(server), marker) == 2


@pytest.mark.parametrize(
    ("name", "stamp"),
    [("an hour old", lambda now: str(now - 3600)), ("an hour ahead", lambda now: str(now + 3600)),
     ("just past the tolerance", lambda now: str(now - 400)), ("not a number", lambda now: "yesterday"),
     ("signed as another spelling", lambda now: f"+{now}"), ("epoch zero", lambda now: "0")],
)
def test_a_timestamp_outside_the_tolerance_is_refused(server: HttpServer, name: str, stamp: Any) -> None:
    marker = _marker()
    body = _lines(marker)
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", stamp(int(time.time()))
    # Signed over exactly these headers: the timestamp alone is what's wrong.
    content = f"{msg_id}.{timestamp}.".encode() + body
    signature = "v1," + base64.b64encode(hmac.new(WEBHOOK_KEY, content, hashlib.sha256).digest()).decode()
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    response = _post_signed(server, body, headers)
    assert response.status_code == 400, name
    assert response.json()["error"].startswith("webhook-timestamp"), name
    assert _count(_logs_db(server), marker) == 0
    _assert_no_secret(response)


def test_missing_or_malformed_headers_name_the_header(server: HttpServer) -> None:
    marker = _marker()
    body = _lines(marker)
    headers = _signed(body)
    for header in ("webhook-id", "webhook-timestamp"):
        response = _post_signed(server, body, {k: v for k, v in headers.items() if k != header})
        assert response.status_code == 400 and header in response.json()["error"]
    # Our signer refuses a '.' in an id (it would make the signed content ambiguous); a forger would not.
    stamp = int(time.time())
    dotted = {"webhook-id": "msg.with.dots", "webhook-timestamp": str(stamp),
              "webhook-signature": sign_webhook(WEBHOOK_SECRET, "msg.with.dots", stamp, body)}
    response = _post_signed(server, body, dotted)
    assert response.status_code == 400 and response.json()["error"].startswith("webhook-id")
    assert _count(_logs_db(server), marker) == 0


def test_a_replayed_webhook_id_is_processed_once(server: HttpServer) -> None:
    marker = _marker()
    body = _lines(marker, 3)
    msg_id = f"msg_{uuid.uuid4().hex}"
    headers = _signed(body, msg_id)
    assert _post_signed(server, body, headers).json() == {"accepted": 3}
    replay = _post_signed(server, body, headers)
    assert replay.status_code == 200 and replay.json() == {"accepted": 0, "duplicate": True}
    # A sender's retry is the same id with a new timestamp and signature: still a duplicate.
    retry = _post_signed(server, body, _signed(body, msg_id, timestamp=int(time.time()) + 1))
    assert retry.json() == {"accepted": 0, "duplicate": True}
    assert _count(_logs_db(server), marker) == 3
    # The same body under a new id is a new message.
    assert _post_signed(server, body, _signed(body)).json() == {"accepted": 3}
    assert _count(_logs_db(server), marker) == 6


async def test_copies_of_one_message_arriving_at_once_are_stored_once(server: HttpServer) -> None:
    marker = _marker()
    body = _lines(marker, 4)
    headers = _signed(body)
    async with httpx2.AsyncClient(base_url=server.base) as client:
        answers = await asyncio.gather(
            *(client.post("/ingest/logs", content=body, headers=headers) for _ in range(8))
        )
    assert all(answer.status_code == 200 for answer in answers)
    assert _count(_logs_db(server), marker) == 4


def test_bearer_senders_work_as_before_and_are_not_deduplicated(server: HttpServer) -> None:
    marker = _marker()
    body = _lines(marker)
    bearer = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    for _ in range(2):  # no id to tell a retry from a second event: both are kept
        response = httpx2.post(f"{server.base}/ingest/logs", content=body, headers=bearer)
        assert response.json() == {"accepted": 2}
    assert _count(_logs_db(server), marker) == 4
    # webhook-id alone, without a signature, is just a header to a bearer sender.
    tagged = httpx2.post(f"{server.base}/ingest/logs", content=body, headers={**bearer, "webhook-id": "msg_x"})
    assert tagged.json() == {"accepted": 2}
    unsigned = httpx2.post(f"{server.base}/ingest/logs", content=body, headers={"webhook-id": "msg_x"})
    assert unsigned.status_code == 401


# -- Vercel drain redeliveries ----------------------------------------------------------------------------


def test_a_redelivered_drain_batch_adds_no_records(server: HttpServer) -> None:
    marker = _marker()
    entries = _drain_entries(marker, 3)
    assert _post_drain(server, entries).json() == {"accepted": 3}
    again = _post_drain(server, entries)
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicate": True}
    # A later batch that repeats two records and brings one new one, and a record twice in one batch.
    newer = {**DRAIN, "id": f"{marker}-3", "message": f"{marker} drain 3"}
    assert _post_drain(server, [*entries[1:], newer]).json() == {"accepted": 1, "duplicates": 2}
    fresh = {**DRAIN, "id": f"{marker}-4", "message": f"{marker} drain 4"}
    assert _post_drain(server, [fresh, fresh]).json() == {"accepted": 1, "duplicates": 1}
    assert _count(_logs_db(server), marker) == 5
    # Two different entries that share an id are both kept: a line is never dropped as another's copy.
    clash = {**DRAIN, "id": f"{marker}-0", "message": f"{marker} drain other text"}
    assert _post_drain(server, [clash]).json() == {"accepted": 1}


def _restart(server: HttpServer, directory: Path, config: dict[str, Any]) -> HttpServer:
    stop(server.process)
    return _start_http_server(directory, config)


def _deliver_everything(server: HttpServer, marker: str, body: bytes, msg_id: str) -> list[httpx2.Response]:
    return [
        _post_drain(server, _drain_entries(marker, 3)),
        _post_signed(server, body, _signed(body, msg_id)),
    ]


def test_redeliveries_after_a_restart_add_no_records(tmp_path: Path) -> None:
    marker, msg_id = _marker(), f"msg_{uuid.uuid4().hex}"
    body = _lines(marker + "hook", 2)
    server = _start_http_server(tmp_path, _config())
    try:
        first = _deliver_everything(server, marker, body, msg_id)
        assert [r.json() for r in first] == [{"accepted": 3}, {"accepted": 2}]
        server = _restart(server, tmp_path, _config())
        again = _deliver_everything(server, marker, body, msg_id)
        assert [r.json() for r in again] == [{"accepted": 0, "duplicate": True}] * 2
        assert _count(_logs_db(server), marker) == 5
    finally:
        stop(server.process)
    log = server.stderr.read_text()
    for secret in SECRETS:
        assert secret not in log


def test_redeliveries_after_a_restart_add_no_records_in_postgresql(tmp_path: Path, postgres_url: str) -> None:
    url = create_schema(postgres_url)
    config = _config(database_url=url)
    marker, msg_id = _marker(), f"msg_{uuid.uuid4().hex}"
    body = _lines(marker + "hook", 2)
    server = _start_http_server(tmp_path, config)
    try:
        assert [r.json() for r in _deliver_everything(server, marker, body, msg_id)] == [
            {"accepted": 3}, {"accepted": 2}]
        server = _restart(server, tmp_path, config)
        assert [r.json() for r in _deliver_everything(server, marker, body, msg_id)] == [
            {"accepted": 0, "duplicate": True}] * 2
        assert _count_postgres(url, marker) == 5
    finally:
        stop(server.process)


# -- the stores themselves --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        opened: Any = SqliteLogStore(tmp_path / "logs.db")
    else:
        opened = PostgresLogStore(create_schema(request.getfixturevalue("postgres_url")))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_store_writes_each_key_once(store: Any) -> None:
    now = time.time()
    batch = [LogRecord(now, "one", key="k:1"), LogRecord(now, "two", key="k:2"),
             LogRecord(now, "one again", key="k:1"), LogRecord(now, "unkeyed"), LogRecord(now, "unkeyed")]
    assert await store.append(batch) == 4
    assert await store.known_keys(["k:1", "k:2", "k:3"]) == {"k:1", "k:2"}
    assert await store.append(batch) == 2  # only the unkeyed ones, again
    assert (await store.stats())["records"] == 6
    # A key outlives nothing: retention deletes the record and its key together.
    assert await store.prune(now + 1) == 6
    assert await store.known_keys(["k:1"]) == set()


async def test_a_drain_entry_keeps_its_key_through_the_store(store: Any) -> None:
    body = json.dumps([{**DRAIN, "id": "same"}, {**DRAIN, "id": "same", "message": "different text"}]).encode()
    assert await store.append(drain_records(body)) == 2
    assert await store.append(drain_records(body)) == 0


async def test_an_index_from_before_keys_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    old = SqliteDatabase(path)
    await old.open()
    await old.migrate("logs", sqlite_store._MIGRATIONS[:1])  # the schema as released before keys
    await old.close()
    store = SqliteLogStore(path)
    await store.open()
    try:
        now = time.time()
        await store.append([LogRecord(now, "old-style"), LogRecord(now, "keyed", key="k")])
        assert await store.append([LogRecord(now, "keyed", key="k")]) == 0
        assert (await store.stats())["records"] == 2
    finally:
        await store.close()
