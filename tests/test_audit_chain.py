"""The audit trail's hash chain on real SQLite: records appended through the gate verify; the triggers refuse
UPDATE and DELETE; a direct edit of the file is found and named; the chain survives reopening and concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops_agent.cli import app
from ops_agent.governance import RateLimiter, RateLimits
from ops_agent.governance import audit as audit_module
from ops_agent.governance.audit import (
    GENESIS_HASH,
    AuditRecord,
    LogAuditLog,
    SqliteAuditLog,
)
from ops_agent.services import open_services
from ops_agent.stores.sqlite import SqliteDatabase
from tests.conftest import make_settings

HASHED = ("id", *AuditRecord.__dataclass_fields__, "prev_hash")


async def nothing() -> dict:
    return {}


async def audit_reads(services, caller, count: int) -> None:
    """`count` read calls through the real gate, each audited (batched: reads are not durable)."""
    await asyncio.gather(*(services.gate.run(caller, "probe", "read", {"n": n}, nothing) for n in range(count)))
    await services.gate.audit.flush()


def tamper(path: Path, *statements: str, params: tuple = ()) -> None:
    """Edit the database file directly, as someone with write access to it could: drop the triggers first."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        for trigger in ("audit_log_no_update", "audit_log_no_delete", "audit_log_chained_insert"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for statement in statements:
            conn.execute(statement, params if "?" in statement else ())
    finally:
        conn.close()


def canonical_hash(row: sqlite3.Row) -> str:
    """The documented canonical form, computed independently of the module."""
    fields = {name: row[name] for name in HASHED}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture
async def ten(services, caller):
    """Services whose audit trail holds ten chained records, 1 to 10."""
    await audit_reads(services, caller, 10)
    assert (await services.gate.audit.verify()).records_checked == 10
    return services


def db_path(services) -> Path:
    return services.gate.audit.db.path


async def test_records_through_the_gate_verify(services, caller):
    await audit_reads(services, caller, 5)
    await services.gate.reject(caller, "no_such_tool", {"x": 1}, "unknown tool")  # an invalid call, audited too
    result = await services.gate.audit.verify()
    assert (result.ok, result.records_checked, result.first_bad_id, result.problem) == (True, 6, None, None)
    records = await services.gate.audit.recent(10)
    assert records[-1]["prev_hash"] == GENESIS_HASH
    assert [r["prev_hash"] for r in records[:-1]] == [r["hash"] for r in records[1:]]
    assert result.head_hash == records[0]["hash"]


async def test_the_hash_is_sha256_of_sorted_key_json(ten):
    conn = sqlite3.connect(db_path(ten))
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
    conn.close()
    assert [row["hash"] for row in rows] == [canonical_hash(row) for row in rows]


async def test_update_and_delete_are_refused(ten):
    db = ten.gate.audit.db
    with pytest.raises(sqlite3.IntegrityError, match="append-only: records cannot be updated"):
        await db.run(lambda conn: conn.execute("UPDATE audit_log SET outcome = 'ok' WHERE id = 3"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only: records cannot be deleted"):
        await db.run(lambda conn: conn.execute("DELETE FROM audit_log WHERE id = 3"))
    with pytest.raises(sqlite3.IntegrityError, match="inserted with their hashes"):
        await db.run(
            lambda conn: conn.execute(
                "INSERT INTO audit_log (ts, agent, via, tool, arguments, decision, outcome, duration_ms, tokens,"
                " usd_micros) VALUES (0, 'forger', 'cli', 'probe', '{}', 'allowed', 'ok', 0, 0, 0)"
            )
        )
    with pytest.raises(sqlite3.IntegrityError, match="genesis cannot be changed"):
        await db.run(lambda conn: conn.execute("UPDATE audit_chain_genesis SET after_id = 5"))
    # and from another connection to the same file, too
    conn = sqlite3.connect(db_path(ten))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    conn.close()
    assert (await ten.gate.audit.verify()).ok


@pytest.mark.parametrize(
    ("statements", "first_bad_id", "problem"),
    [
        (["UPDATE audit_log SET outcome = 'refused' WHERE id = 5"], 5, "record 5 was changed"),
        (["UPDATE audit_log SET arguments = '{\"n\": 99}' WHERE id = 1"], 1, "record 1 was changed"),
        (["UPDATE audit_log SET ts = ts + 1 WHERE id = 10"], 10, "record 10 was changed"),
        (["DELETE FROM audit_log WHERE id = 5"], 5, "record 5 is missing (ids jump from 4 to 6)"),
        (["DELETE FROM audit_log WHERE id IN (5, 6, 7)"], 5, "records 5-7 are missing (ids jump from 4 to 8)"),
        (["DELETE FROM audit_log WHERE id = 1"], 1, "record 1 is missing (ids jump from 0 to 2)"),
        (  # reorder: records 5 and 6 swap places
            [
                "UPDATE audit_log SET id = -6 WHERE id = 6",
                "UPDATE audit_log SET id = 6 WHERE id = 5",
                "UPDATE audit_log SET id = 5 WHERE id = -6",
            ],
            5,
            "record 5 was changed",
        ),
        (["UPDATE audit_log SET hash = NULL, prev_hash = NULL WHERE id >= 4"], 4,
         "record 4 was changed: its hashes are gone"),
        (["UPDATE audit_log SET prev_hash = hash WHERE id = 3"], 3, "record 3 was changed"),
    ],
)
async def test_a_direct_edit_is_named(ten, statements, first_bad_id, problem):
    tamper(db_path(ten), *statements)
    result = await ten.gate.audit.verify()
    assert (result.ok, result.first_bad_id, result.problem) == (False, first_bad_id, problem)
    assert result.records_checked == first_bad_id - 1


async def test_a_record_rewritten_with_a_fresh_hash_breaks_the_next_link(ten):
    path = db_path(ten)
    tamper(path, "UPDATE audit_log SET outcome = 'error', error = 'covered up' WHERE id = 6")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM audit_log WHERE id = 6").fetchone()
    conn.execute("UPDATE audit_log SET hash = ? WHERE id = 6", (canonical_hash(row),))
    conn.close()
    result = await ten.gate.audit.verify()
    assert (result.ok, result.first_bad_id, result.problem) == (False, 7, "chain broken at 7: prev_hash does not match")


async def test_a_cut_off_tail_changes_only_the_head_hash(ten):
    """The documented limit: removing the newest records leaves a valid chain; the head hash shows it."""
    before = await ten.gate.audit.verify()
    tamper(db_path(ten), "DELETE FROM audit_log WHERE id > 8")
    after = await ten.gate.audit.verify()
    assert after.ok and after.records_checked == 8 and after.head_hash != before.head_hash


async def test_a_removed_genesis_marker_is_reported(ten):
    conn = sqlite3.connect(db_path(ten), isolation_level=None)
    conn.execute("DROP TRIGGER audit_chain_genesis_no_delete")
    conn.execute("DELETE FROM audit_chain_genesis")
    conn.close()
    result = await ten.gate.audit.verify()
    assert not result.ok and result.problem == "the chain's genesis marker has 0 rows, not 1"


async def test_concurrent_appends_and_reopening_keep_one_chain(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_module, "_VERIFY_PAGE", 7)  # walk many pages
    settings = make_settings(tmp_path)
    async with open_services(settings) as services:
        services.gate.rate_limiter = RateLimiter(RateLimits.off())  # 500 calls at once is the point here
        caller = services.identity
        reads = [services.gate.run(caller, "probe", "read", {"n": n}, nothing) for n in range(450)]
        writes = [services.gate.run(caller, "probe", "deploy:preview", {"n": n}, nothing) for n in range(50)]
        await asyncio.gather(*reads[:200], *writes, *reads[200:])  # durable writes interleave with the batches
        result = await services.gate.audit.verify()
        assert (result.ok, result.records_checked) == (True, 500)
        head = result.head_hash
    async with open_services(settings) as services:
        assert (await services.gate.audit.verify()).head_hash == head
        await audit_reads(services, services.identity, 20)
        result = await services.gate.audit.verify()
        assert (result.ok, result.records_checked) == (True, 520)
    # and after a direct edit, the triggers are back on the next open
    tamper(tmp_path / "ops-agent.db", "UPDATE audit_log SET tool = 'other' WHERE id = 321")
    async with open_services(settings) as services:
        result = await services.gate.audit.verify()
        assert (result.ok, result.first_bad_id, result.records_checked) == (False, 321, 320)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await services.gate.audit.db.run(lambda conn: conn.execute("DELETE FROM audit_log WHERE id = 321"))


async def test_records_from_before_the_chain_are_counted_not_checked(tmp_path):
    path = tmp_path / "old.db"
    db = SqliteDatabase(path)
    await db.open()
    await db.migrate("audit", audit_module._MIGRATIONS[:1])  # the schema as it was before the chain
    await db.run(
        lambda conn: conn.executemany(
            "INSERT INTO audit_log (ts, agent, via, tool, arguments, decision, outcome, duration_ms, tokens,"
            " usd_micros) VALUES (?, 'old', 'cli', 'probe', '{}', 'allowed', 'ok', 0, 0, 0)",
            [(float(n),) for n in range(3)],
        )
    )
    log = SqliteAuditLog(db, batch_window_s=0)
    await log.migrate()
    record = AuditRecord(ts=1.5, agent_id=None, agent="new", via="test", task_id=None, tool="probe", action="read",
                         arguments={"k": [1, 2]}, decision="allowed", outcome="ok", duration_ms=3, tokens=True)
    for durable in (True, False, False):
        await log.append(record, durable=durable)
    result = await log.verify()
    assert (result.ok, result.records_checked, result.unchained_records) == (True, 3, 3)
    [first] = [r for r in await log.recent(10) if r["id"] == 4]
    assert first["prev_hash"] == GENESIS_HASH and first["duration_ms"] == 3.0
    await log.close()
    await db.close()


async def test_degraded_mode_has_nothing_to_verify():
    result = await LogAuditLog().verify()
    assert result.ok and result.records_checked == 0 and "nothing is stored" in result.note


runner = CliRunner()


def test_cli_audit_verify(env, tmp_path):
    for _ in range(3):
        assert runner.invoke(app, ["call", "get_system_metrics", "-q"]).exit_code == 0
    intact = runner.invoke(app, ["audit", "--verify"])
    assert intact.exit_code == 0, intact.output
    assert "audit trail intact: 3 records" in intact.stdout and "head hash: " in intact.stdout
    report = json.loads(runner.invoke(app, ["audit", "--verify", "--json"]).stdout)
    assert (report["ok"], report["records_checked"]) == (True, 3)

    tamper(tmp_path / "cli.db", "UPDATE audit_log SET outcome = 'error' WHERE id = 2")
    broken = runner.invoke(app, ["audit", "--verify"])
    assert broken.exit_code == 1
    assert "audit trail broken: record 2 was changed" in broken.output
    as_json = runner.invoke(app, ["audit", "--verify", "--json"])
    assert as_json.exit_code == 1 and '"first_bad_id": 2' in as_json.output
    assert runner.invoke(app, ["audit", "--json"]).exit_code == 0  # the listing still works
