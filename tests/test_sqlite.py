"""The SQLite plumbing: transactions in one hop, and no cursor ever leaves the database thread."""

from __future__ import annotations

import sqlite3

import pytest

from ops_agent.stores.sqlite import SqliteDatabase


@pytest.fixture
async def db(tmp_path):
    database = SqliteDatabase(tmp_path / "t.db")
    await database.open()
    await database.migrate("t", ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])
    yield database
    await database.close()


async def test_cursors_stay_on_the_database_thread(db):
    # A cursor freed on the event loop's thread would reset a cached statement the database thread may be
    # running (seen as sqlite3.InterfaceError under load): callers get the row count instead.
    inserted = await db.write(lambda conn: conn.executemany("INSERT INTO t (v) VALUES (?)", [("a",), ("b",)]))
    assert inserted == 2 and not isinstance(inserted, sqlite3.Cursor)
    deleted = await db.run(lambda conn: conn.execute("DELETE FROM t WHERE v = 'a'"))
    assert deleted == 1
    rows = await db.run(lambda conn: conn.execute("SELECT v FROM t").fetchall())
    assert [row["v"] for row in rows] == ["b"]


async def test_a_failing_transaction_leaves_nothing(db):
    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('kept?')")
        raise RuntimeError("halfway")

    with pytest.raises(RuntimeError):
        await db.write(half)
    assert await db.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 0


async def test_migrations_apply_once(db):
    await db.migrate("t", ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "ALTER TABLE t ADD COLUMN w TEXT"])
    await db.migrate("t", ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "ALTER TABLE t ADD COLUMN w TEXT"])
    columns = await db.run(lambda conn: [row[1] for row in conn.execute("PRAGMA table_info(t)")])
    assert columns == ["id", "v", "w"]
