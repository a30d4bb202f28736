"""Metric series on real SQLite files and in memory: label matching, buffering, persistence, retention
and downsampling, validation, and the ring buffer's bound."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import pytest

from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.monitoring.series import (
    MemorySeries,
    Point,
    SeriesStore,
    SqliteSeriesStore,
    labels_of,
)

HOUR = 3600.0
BASE = 28_333_320 * 60.0  # 2023-11-14, on a minute boundary
NOW = BASE + 3 * HOUR  # the `now` handed to compact(); no store compacts on its own unless a test says so


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "series.db")
    await database.open()
    yield database
    await database.close()


async def sqlite_store(db: SqliteDatabase, **options) -> SqliteSeriesStore:
    """A store whose compaction runs only when a test calls compact(now), unless options say otherwise."""
    store = SqliteSeriesStore(db, **{"compact_every_s": None, **options})
    await store.migrate()
    return store


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, db) -> AsyncIterator[SeriesStore]:
    opened: SeriesStore = MemorySeries() if request.param == "memory" else await sqlite_store(db)
    yield opened
    await opened.close()


async def count(db: SqliteDatabase, table: str) -> int:
    return await db.run(lambda conn: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def L(**labels: str):
    return labels_of(labels)


# The behaviour of every SeriesStore.


async def test_points_match_every_series_whose_labels_include_the_matchers(store):
    for host, core, value in [("a", "0", 1.0), ("a", "1", 2.0), ("b", "0", 3.0)]:
        await store.record("cpu_percent", value, {"host": host, "core": core}, ts=BASE)
    await store.record("memory_percent", 50.0, {"host": "a"}, ts=BASE)

    found = await store.points("cpu_percent", {"host": "a"}, BASE, BASE)
    assert found == {
        L(host="a", core="0"): [Point(BASE, 1.0)],
        L(host="a", core="1"): [Point(BASE, 2.0)],
    }
    assert set(await store.points("cpu_percent", {}, BASE, BASE)) == {
        L(host="a", core="0"), L(host="a", core="1"), L(host="b", core="0"),
    }
    assert await store.points("cpu_percent", {"host": "b", "core": "0"}, BASE, BASE) == {
        L(host="b", core="0"): [Point(BASE, 3.0)]
    }
    assert await store.points("cpu_percent", {"host": "c"}, BASE, BASE) == {}
    assert await store.points("cpu_percent", {"region": "a"}, BASE, BASE) == {}
    assert await store.points("no_such_metric", {}, BASE, BASE) == {}


async def test_points_are_oldest_first_within_inclusive_bounds(store):
    for offset in [30, 10, 50, 20, 40, 0]:
        await store.record("rps", offset / 10, {"service": "api"}, ts=BASE + offset)

    found = await store.points("rps", {"service": "api"}, BASE + 10, BASE + 40)
    assert found == {L(service="api"): [Point(BASE + t, t / 10) for t in (10, 20, 30, 40)]}
    assert await store.points("rps", {}, BASE + 41, BASE + 49) == {}


async def test_unlabelled_series_and_record_many(store):
    await store.record("queue_depth", 3, ts=BASE)
    await store.record_many(
        [("queue_depth", {}, BASE + 1, 4.0), ("latency_ms", {"service": "api"}, BASE + 1, 12.5)]
    )
    assert await store.points("queue_depth", {}, BASE, BASE + 1) == {
        frozenset(): [Point(BASE, 3.0), Point(BASE + 1, 4.0)]
    }
    assert await store.latest("latency_ms", {}) == {L(service="api"): Point(BASE + 1, 12.5)}


async def test_record_without_timestamp_uses_now(store):
    start = time.time()
    await store.record("up", 1)
    (points,) = (await store.points("up", {}, start - 1, time.time() + 1)).values()
    assert len(points) == 1 and start <= points[0].ts <= time.time()


async def test_latest_is_the_newest_point_of_each_series(store):
    await store.record("disk_percent", 70, {"mount": "/"}, ts=BASE + 20)
    await store.record("disk_percent", 60, {"mount": "/"}, ts=BASE + 10)  # late, older
    await store.record("disk_percent", 10, {"mount": "/boot"}, ts=BASE + 5)
    assert await store.latest("disk_percent", {}) == {
        L(mount="/"): Point(BASE + 20, 70.0),
        L(mount="/boot"): Point(BASE + 5, 10.0),
    }
    assert await store.latest("disk_percent", {"mount": "/boot"}) == {L(mount="/boot"): Point(BASE + 5, 10.0)}
    assert await store.latest("disk_percent", {"mount": "/var"}) == {}


async def test_names_lists_series_and_their_label_sets(store):
    assert await store.names() == {}
    await store.record("cpu_percent", 1, {"host": "b"}, ts=BASE)
    await store.record("cpu_percent", 1, {"host": "a"}, ts=BASE)
    await store.record("cpu_percent", 2, {"host": "a"}, ts=BASE + 1)
    await store.record("http.p95_ms", 1, {"service": "api", "probe": "health"}, ts=BASE)
    await store.record("load1", 0.5, ts=BASE)
    assert await store.names() == {
        "cpu_percent": [{"host": "a"}, {"host": "b"}],
        "http.p95_ms": [{"probe": "health", "service": "api"}],
        "load1": [{}],
    }


@pytest.mark.parametrize(
    ("name", "labels", "value", "named"),
    [
        ("", None, 1.0, "''"),
        ("1cpu", None, 1.0, "'1cpu'"),
        ("cpu percent", None, 1.0, "'cpu percent'"),
        ("cpu-percent", None, 1.0, "'cpu-percent'"),
        ("cpu\n", None, 1.0, "'cpu\\n'"),
        ("x" * 257, None, 1.0, "'xxxxxxxx"),
        ("cpu", {"bad-key": "x"}, 1.0, "'bad-key'"),
        ("cpu", {"0core": "x"}, 1.0, "'0core'"),
        ("cpu", {"host:name": "x"}, 1.0, "'host:name'"),
        ("cpu", {"host": "x" * 257}, 1.0, "'host' is 257 characters"),
        ("cpu", {"core": 1}, 1.0, "'core' must be a string"),
        ("cpu", None, math.nan, "value nan"),
        ("cpu", None, math.inf, "value inf"),
        ("cpu", None, -math.inf, "value -inf"),
        ("cpu", None, "12", "value '12'"),
        ("cpu", None, None, "value None"),
    ],
)
async def test_invalid_samples_raise_value_error_naming_the_problem(store, name, labels, value, named):
    with pytest.raises(ValueError) as raised:
        await store.record(name, value, labels, ts=BASE)
    assert named in str(raised.value)
    assert await store.names() == {}


async def test_a_bad_sample_refuses_the_whole_batch(store):
    with pytest.raises(ValueError, match="timestamp nan"):
        await store.record_many([("cpu", {}, BASE, 1.0), ("cpu", {}, math.nan, 2.0)])
    assert await store.names() == {}


async def test_bad_matchers_raise_value_error(store):
    with pytest.raises(ValueError, match="'bad-key'"):
        await store.points("cpu", {"bad-key": "x"}, BASE, NOW)
    with pytest.raises(ValueError, match="'cpu percent'"):
        await store.latest("cpu percent", {})


# MemorySeries: the ring buffer.


async def test_memory_series_keeps_the_newest_maxlen_points_per_series():
    series = MemorySeries(maxlen=5)
    for i in range(12):
        await series.record("cpu", i, {"host": "a"}, ts=BASE + i)
    await series.record("cpu", 0, {"host": "b"}, ts=BASE)
    found = await series.points("cpu", {}, BASE, NOW)
    assert found[L(host="a")] == [Point(BASE + i, float(i)) for i in range(7, 12)]
    assert found[L(host="b")] == [Point(BASE, 0.0)]

    await series.record("cpu", -1, {"host": "a"}, ts=BASE + 1)  # older than all five it keeps: dropped
    await series.record("cpu", 9.5, {"host": "a"}, ts=BASE + 9.5)  # late but recent: takes its place
    assert [p.ts - BASE for p in (await series.points("cpu", {"host": "a"}, BASE, NOW))[L(host="a")]] == [
        8, 9, 9.5, 10, 11
    ]
    assert (await series.latest("cpu", {"host": "a"}))[L(host="a")] == Point(BASE + 11, 11.0)


async def test_memory_series_bounds_the_number_of_series():
    series = MemorySeries(max_series=2)
    await series.record("cpu", 1, {"host": "a"}, ts=BASE)
    await series.record("cpu", 1, {"host": "b"}, ts=BASE)
    await series.record("cpu", 2, {"host": "b"}, ts=BASE + 1)  # an existing series is fine
    with pytest.raises(ValueError, match="too many series"):
        await series.record("cpu", 1, {"host": "c"}, ts=BASE)
    assert await series.names() == {"cpu": [{"host": "a"}, {"host": "b"}]}


# SqliteSeriesStore: buffering and persistence.


async def test_buffered_points_are_visible_before_the_flush_and_never_twice(db):
    store = await sqlite_store(db, batch_window_s=60)
    await store.record("cpu", 1, {"host": "a"}, ts=BASE)
    await store.flush()
    await store.record("cpu", 2, {"host": "a"}, ts=BASE + 1)
    await store.record("cpu", 3, {"host": "b"}, ts=BASE + 1)
    assert await count(db, "metric_points") == 1

    expected = {L(host="a"): [Point(BASE, 1.0), Point(BASE + 1, 2.0)], L(host="b"): [Point(BASE + 1, 3.0)]}
    assert await store.points("cpu", {}, BASE, NOW) == expected
    assert await store.latest("cpu", {}) == {L(host="a"): Point(BASE + 1, 2.0), L(host="b"): Point(BASE + 1, 3.0)}
    assert await store.names() == {"cpu": [{"host": "a"}, {"host": "b"}]}

    await store.flush()
    assert await count(db, "metric_points") == 3
    assert await store.points("cpu", {}, BASE, NOW) == expected
    await store.close()


async def test_the_timer_flushes_a_batch_without_being_asked(db):
    store = await sqlite_store(db, batch_window_s=0.01)
    await store.record("cpu", 1, ts=BASE)
    for _ in range(500):
        if await count(db, "metric_points") == 1:
            break
        await asyncio.sleep(0.01)
    assert await count(db, "metric_points") == 1
    await store.close()


async def test_ten_thousand_records_are_ten_thousand_rows(db):
    store = await sqlite_store(db)
    for i in range(10_000):
        await store.record("http.requests", i, {"service": f"svc{i % 7}"}, ts=BASE + i / 100)
    await store.flush()
    assert await count(db, "metric_points") == 10_000
    assert await count(db, "metric_series") == 7
    found = await store.points("http.requests", {}, BASE, NOW)
    assert sum(len(points) for points in found.values()) == 10_000
    assert found[L(service="svc0")][:2] == [Point(BASE, 0.0), Point(BASE + 0.07, 7.0)]
    await store.close()


async def test_series_survive_closing_and_reopening_the_database(tmp_path):
    path = tmp_path / "persist.db"
    db = SqliteDatabase(path)
    await db.open()
    store = await sqlite_store(db)
    await store.record("cpu", 42, {"host": "a"}, ts=BASE)
    await store.record_many([("cpu", {"host": "a"}, BASE + 1, 43.0)])
    await store.close()
    await db.close()

    db = SqliteDatabase(path)
    await db.open()
    store = await sqlite_store(db)  # the migration is applied once
    assert await store.points("cpu", {"host": "a"}, BASE, NOW) == {
        L(host="a"): [Point(BASE, 42.0), Point(BASE + 1, 43.0)]
    }
    await store.record("cpu", 44, {"host": "a"}, ts=BASE + 2)
    await store.flush()
    assert await count(db, "metric_series") == 1  # the reopened store found the series it had
    await store.close()
    await db.close()


async def test_recording_after_close_is_an_error(db):
    store = await sqlite_store(db)
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.record("cpu", 1)


# SqliteSeriesStore: retention and downsampling.


async def record_three_hours(store: SqliteSeriesStore) -> None:
    """Every 10 s for 3 hours from BASE: host a gets the sample's index, host b minus it."""
    await store.record_many(
        [("cpu", {"host": "a"}, BASE + 10 * i, float(i)) for i in range(1080)]
        + [("cpu", {"host": "b"}, BASE + 10 * i, float(-i)) for i in range(1080)]
    )


async def test_compaction_keeps_raw_points_for_their_retention_and_rolls_up_the_rest(db):
    store = await sqlite_store(db, raw_retention_s=HOUR, rollup_step_s=60)
    await record_three_hours(store)
    await store.compact(now=NOW)

    oldest_raw = await db.run(lambda conn: conn.execute("SELECT min(ts) FROM metric_points").fetchone()[0])
    assert oldest_raw == NOW - HOUR
    assert await count(db, "metric_points") == 2 * 360
    assert await count(db, "metric_rollups") == 2 * 120

    rollups = (await store.rollups("cpu", {"host": "a"}, BASE, NOW))[L(host="a")]
    assert [r.ts for r in rollups] == [BASE + 60 * k for k in range(120)]
    for k, rollup in enumerate(rollups):
        assert (rollup.min, rollup.max, rollup.count, rollup.sum) == (6 * k, 6 * k + 5, 6, 36 * k + 15)
        assert (rollup.avg, rollup.last, rollup.last_ts) == (6 * k + 2.5, 6 * k + 5, BASE + 60 * k + 50)
    b = (await store.rollups("cpu", {"host": "b"}, BASE, NOW))[L(host="b")]
    assert (b[1].min, b[1].max, b[1].avg) == (-11, -6, -8.5)

    found = await store.points("cpu", {}, BASE, NOW)
    points = found[L(host="a")]
    assert points[:120] == [Point(BASE + 60 * k, 6 * k + 2.5) for k in range(120)]
    assert points[120:] == [Point(BASE + 10 * i, float(i)) for i in range(720, 1080)]
    assert all(earlier.ts < later.ts for earlier, later in zip(points, points[1:]))
    assert len(found[L(host="b")]) == 480

    # A window inside the downsampled part: bucket starts in it, bounds included.
    assert await store.points("cpu", {"host": "a"}, BASE + 600, BASE + 720) == {
        L(host="a"): [Point(BASE + 600, 62.5), Point(BASE + 660, 68.5), Point(BASE + 720, 74.5)]
    }
    assert await store.latest("cpu", {"host": "a"}) == {L(host="a"): Point(BASE + 10790, 1079.0)}

    await store.compact(now=NOW)  # idempotent
    assert (await count(db, "metric_points"), await count(db, "metric_rollups")) == (720, 240)
    await store.close()


async def test_only_whole_buckets_are_rolled_up_and_late_samples_merge_into_their_bucket(db):
    store = await sqlite_store(db, raw_retention_s=HOUR, rollup_step_s=60)
    await record_three_hours(store)
    await store.compact(now=NOW + 30)  # half a minute later: the bucket at NOW - HOUR is not whole yet
    assert await count(db, "metric_points") == 2 * 360

    await store.record_many([("cpu", {"host": "a"}, BASE + 5, 100.0), ("cpu", {"host": "a"}, BASE + 1, -50.0)])
    await store.compact(now=NOW)
    (first, *_) = (await store.rollups("cpu", {"host": "a"}, BASE, BASE))[L(host="a")]
    assert (first.min, first.max, first.count, first.sum) == (-50, 100, 8, 15 + 100 - 50)
    assert (first.last, first.last_ts) == (5.0, BASE + 50)  # the newest sample of the bucket, not the last written
    await store.close()


async def test_rollups_expire_after_their_retention_and_empty_series_go(db):
    store = await sqlite_store(db, raw_retention_s=HOUR, rollup_retention_s=2 * HOUR, rollup_step_s=60)
    await record_three_hours(store)
    await store.record("mem", 1.0, ts=NOW - 60)
    await store.compact(now=NOW)
    rollups = (await store.rollups("cpu", {"host": "a"}, BASE, NOW))[L(host="a")]
    assert [r.ts for r in rollups] == [NOW - 2 * HOUR + 60 * k for k in range(60)]  # whole buckets within 2 h

    await store.compact(now=NOW + HOUR + 60)
    assert await store.rollups("cpu", {}, BASE, NOW) != {}
    assert await count(db, "metric_points") == 0

    await store.compact(now=NOW + 3 * HOUR + 60)
    assert (await count(db, "metric_points"), await count(db, "metric_rollups")) == (0, 0)
    assert await store.names() == {}
    assert await count(db, "metric_series") == 0

    await store.record("cpu", 1.0, {"host": "a"}, ts=NOW + 3 * HOUR)  # a series comes back after expiring
    await store.flush()
    assert await store.latest("cpu", {}) == {L(host="a"): Point(NOW + 3 * HOUR, 1.0)}
    await store.close()


async def test_the_first_flush_compacts_and_later_ones_wait_for_the_interval(db):
    now = time.time()
    store = await sqlite_store(db, raw_retention_s=HOUR, compact_every_s=3600)
    await store.record("cpu", 1.0, ts=now - 3 * HOUR)
    await store.record("cpu", 2.0, ts=now)
    await store.flush()
    assert (await count(db, "metric_points"), await count(db, "metric_rollups")) == (1, 1)

    await store.record("cpu", 3.0, ts=now - 2 * HOUR)
    await store.flush()
    assert (await count(db, "metric_points"), await count(db, "metric_rollups")) == (2, 1)

    await store.compact()
    assert (await count(db, "metric_points"), await count(db, "metric_rollups")) == (1, 2)
    await store.close()


async def test_tiered_series_reads_recent_windows_from_memory_and_older_ones_from_the_store(tmp_path):
    from ops_agent.tools.monitoring.series import TieredSeries

    db = SqliteDatabase(tmp_path / "tiered.db")
    await db.open()
    store = SqliteSeriesStore(db, compact_every_s=None)
    await store.migrate()
    now = 1_000_000.0
    # history from "before a restart": only in the store
    await store.record_many([("cpu", {}, now - 600 + i, float(i)) for i in range(10)])
    await store.flush()
    memory = MemorySeries(maxlen=5)
    tiered = TieredSeries(memory, store, clock=lambda: now - 100)
    await tiered.record_many([("cpu", {}, now - 50 + i, 100.0 + i) for i in range(3)])

    recent = await tiered.points("cpu", {}, now - 60, now)  # within memory's span: from memory
    assert [p.value for p in next(iter(recent.values()))] == [100.0, 101.0, 102.0]
    older = await tiered.points("cpu", {}, now - 700, now)  # reaches before memory began: from the store
    assert len(next(iter(older.values()))) == 13
    assert [p.value for p in (await tiered.latest("cpu", {})).values()] == [102.0]

    # the ring drops points: a window it no longer covers is read from the store
    await tiered.record_many([("cpu", {}, now - 40 + i, 200.0 + i) for i in range(5)])
    assert not memory.covers("cpu", {}, now - 60)
    dropped = await tiered.points("cpu", {}, now - 60, now)
    assert len(next(iter(dropped.values()))) == 8
    with pytest.raises(ValueError):
        await tiered.record("bad name!", 1.0)
    assert "bad name!" not in await memory.names()
    await store.close()
    await db.close()
