"""The partitioned log (sql/084, sql/085, eventstore/partitions.py): partitions made ahead and
on demand, the log's invariants on partitions, the guard against a DROP or DETACH by hand,
and the in-place conversion of an existing log."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from eventstore import archive, locks, partitions
from eventstore import read as reader
from eventstore.append import Appender, write_batch
from eventstore.archive_store import ArchiveStore
from eventstore.events import NewEvent
from eventstore.migrate import SQL_DIR, migrate
from eventstore.pool import connect, create_pool
from tests.eventstore import test_eventstore as base
from tests.support.logs import new_database, partitioned_log, sql_before


def event(body: bytes, channel: str = "c1", key: str | None = None) -> NewEvent:
    return NewEvent(
        received_at=dt.datetime.now(dt.UTC),
        channel=channel,
        provider="wamm",
        content_type="application/json",
        headers={},
        body=body,
        dedup_key=key or "k:" + body.decode(),
    )


async def _append_all(dsn: str, n: int, max_batch: int = 512) -> list[int]:
    pool = await create_pool(dsn, min_size=1, max_size=4)
    appender = Appender(pool, max_batch=max_batch, writers=2)
    await appender.start()
    try:
        done = await asyncio.gather(*(appender.append(event(b"e%d" % i)) for i in range(n)))
    finally:
        await appender.stop()
        await pool.close()
    return [a.position for a in done]


async def test_a_new_log_is_partitioned_and_sized_by_the_setting(
    small: asyncpg.Connection,
) -> None:
    parts = await partitions.list_partitions(small)
    assert [(p.name, p.low, p.high) for p in parts] == [
        ("events_p0", None, 11),
        ("events_p11", 11, 21),
    ]
    assert (
        await small.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'events'") == "p"
    )
    assert await partitions.next_position(small) == 1


async def test_appends_through_the_appender_fill_partitions_made_ahead_and_on_demand(
    small: asyncpg.Connection, small_dsn: str
) -> None:
    assert await partitions.ensure(small, 10, ahead=2) == ["events_p21"]
    positions = await _append_all(small_dsn, 100)
    assert sorted(positions) == list(range(1, 101)), "positions are gap-free"
    stored = [e.position for e in await reader.read(small, limit=1000)]
    assert stored == list(range(1, 101))
    parts = await partitions.list_partitions(small)
    # 1..100 in ten partitions of ten, the last ones made by append_events itself
    assert [p.high for p in parts] == list(range(11, 102, 10))
    assert all(p.rows == 10 and p.attached and p.bytes > 0 for p in parts)
    made = await partitions.ensure(small, 10, ahead=2)
    assert made == ["events_p101", "events_p111", "events_p121"]
    assert await partitions.ensure(small, 10, ahead=2) == []


async def test_one_batch_larger_than_several_partitions_makes_them_all(
    small: asyncpg.Connection,
) -> None:
    appended = await write_batch(small, [event(b"b%d" % i) for i in range(45)])
    assert [a.position for a in appended] == list(range(1, 46))
    assert [p.high for p in await partitions.list_partitions(small)] == [11, 21, 31, 41, 51]


async def test_a_new_size_applies_to_the_partitions_made_next(small: asyncpg.Connection) -> None:
    await partitions.ensure(small, 100, ahead=1)
    assert [p.high for p in await partitions.list_partitions(small)] == [11, 21, 121]
    await write_batch(small, [event(b"x%d" % i) for i in range(130)])
    assert [p.high for p in await partitions.list_partitions(small)][-1] == 221


async def test_duplicates_are_found_in_older_partitions(small: asyncpg.Connection) -> None:
    first = await write_batch(small, [event(b"same", key="evt-1")])
    await write_batch(small, [event(b"f%d" % i) for i in range(35)])
    again = await write_batch(small, [event(b"same", key="evt-1"), event(b"new", key="evt-2")])
    assert again[0].position > 30 and again[0].duplicate_of == first[0].position
    assert again[1].duplicate_of is None
    other = await write_batch(small, [event(b"same", channel="c2", key="evt-1")])
    assert other[0].duplicate_of is None, "the rule is per channel"


@pytest.mark.parametrize("table", ["events", "events_p0", "events_p11"])
@pytest.mark.parametrize("statement", ["UPDATE {} SET body = 'y'", "DELETE FROM {}", "TRUNCATE {}"])
async def test_the_log_is_append_only_on_the_parent_and_on_each_partition(
    small: asyncpg.Connection, table: str, statement: str
) -> None:
    await write_batch(small, [event(b"e%d" % i) for i in range(15)])
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await small.execute(statement.format(table))
    assert await small.fetchval("SELECT count(*) FROM events") == 15


async def test_a_direct_insert_into_a_partition_takes_the_append_lock(
    small: asyncpg.Connection, small_dsn: str
) -> None:
    other = await connect(small_dsn)
    try:
        async with small.transaction():
            await small.execute("SELECT pg_advisory_xact_lock($1)", locks.APPEND)
            await other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.execute(
                    "INSERT INTO events_p0 (position, received_at, channel, provider, body,"
                    " dedup_key) VALUES (1, now(), 'c', 'wamm', 'x', 'k')"
                )
    finally:
        await other.close()


async def test_racing_writers_across_partitions_never_make_a_tailing_reader_skip(
    server_dsn: str,
) -> None:
    """Invariant 3 while batches cross partition bounds and make partitions: the racing test
    of test_eventstore.py on a log of partitions of 50 (2,400 events: 48 partitions)."""
    async with partitioned_log(server_dsn, 50) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=8)
        try:
            await base.test_racing_writers_never_make_a_tailing_reader_skip(pool)
            assert len(await partitions.list_partitions(pool)) >= 48
        finally:
            await pool.close()


# --- the guard: only retention detaches or drops ------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE events_p0",
        "DROP TABLE events",
        "DROP TABLE events CASCADE",
        "ALTER TABLE events DETACH PARTITION events_p0",
        "ALTER TABLE events DETACH PARTITION events_p11",
    ],
)
async def test_a_drop_or_detach_by_hand_is_refused(
    small: asyncpg.Connection, statement: str
) -> None:
    await write_batch(small, [event(b"e%d" % i) for i in range(15)])
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"log|retention"):
        await small.execute(statement)
    assert [p.name for p in await partitions.list_partitions(small)] == [
        "events_p0",
        "events_p11",
    ]
    assert await small.fetchval("SELECT count(*) FROM events") == 15


async def test_tables_of_other_schemas_named_like_the_log_drop_freely(
    small: asyncpg.Connection,
) -> None:
    await small.execute(
        "CREATE SCHEMA other; CREATE TABLE other.events (); CREATE TABLE other.events_p0 ();"
        " CREATE TABLE other.events_partitions ()"
    )
    await small.execute("DROP TABLE other.events, other.events_p0")
    await small.execute("DROP SCHEMA other CASCADE")
    await small.execute("SET search_path = ''")  # as pg_restore runs
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="retention"):
        await small.execute("DROP TABLE public.events_p11")


async def test_a_concurrent_detach_by_hand_is_refused(small: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="CONCURRENTLY"):
        await small.execute("ALTER TABLE events DETACH PARTITION events_p0 CONCURRENTLY")
    assert all(p.attached for p in await partitions.list_partitions(small))


async def test_a_dropped_and_detached_partition_by_hand_stays_refused(
    small: asyncpg.Connection,
) -> None:
    await write_batch(small, [event(b"e%d" % i) for i in range(25)])
    await partitions.detach_partition(small, "events_p0")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="retention"):
        await small.execute("DROP TABLE events_p0")
    assert await small.fetchval("SELECT count(*) FROM events_p0") == 10


async def test_retention_detaches_and_drops_old_partitions_only(
    small: asyncpg.Connection,
) -> None:
    await write_batch(small, [event(b"e%d" % i, key=f"k{i}") for i in range(25)])
    await partitions.detach_partition(small, "events_p0")
    parts = {p.name: p for p in await partitions.list_partitions(small)}
    assert not parts["events_p0"].attached and parts["events_p0"].rows == 10
    assert await small.fetchval("SELECT min(position) FROM events") == 11
    await partitions.drop_partition(small, "events_p0")
    await partitions.drop_partition(small, "events_p11")  # attached: detached, then dropped
    assert [p.name for p in await partitions.list_partitions(small)] == ["events_p21"]
    assert await small.fetchval("SELECT to_regclass('events_p11')") is None
    assert [e.position for e in await reader.read(small)] == list(range(21, 26))
    with pytest.raises(partitions.PartitionInUse):
        await partitions.drop_partition(small, "events_p21")  # holds the next position
    with pytest.raises(partitions.NotAPartition):
        await partitions.detach_partition(small, "channels")
    # the log goes on; a retry of a dropped event's key is stored as new (docs/data.md)
    again = await write_batch(small, [event(b"e0", key="k0"), event(b"e22", key="k22")])
    assert again[0].duplicate_of is None and again[1].duplicate_of == 23


# --- the conversion of an existing log ----------------------------------------------------


@pytest.fixture
async def fresh_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A database with no migration applied yet."""
    async with new_database(server_dsn) as dsn:
        yield dsn


async def test_an_existing_log_is_converted_in_place(fresh_dsn: str, tmp_path: Path) -> None:
    dsn = fresh_dsn
    conn = await connect(dsn)
    try:
        await migrate(conn, sql_before(tmp_path, 84))
        await write_batch(conn, [event(b"old%d" % i) for i in range(50)])
        await write_batch(conn, [event(b"old7")])  # a duplicate, marked before the change
        index = await conn.fetchval("SELECT 'events_channel_position'::regclass::oid")
        assert (await migrate(conn))[:2] == [84, 85]  # and any later ones
        parts = await partitions.list_partitions(conn)
        assert [(p.name, p.low, p.high, p.rows) for p in parts] == [
            ("events_p0", None, 2_000_000, 51),
            ("events_p2000000", 2_000_000, 3_000_000, 0),
        ]
        # the old table's indexes were attached, not rebuilt
        assert (
            await conn.fetchval(
                "SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = $1", index
            )
            == "events_channel_position"
        )
        after = await write_batch(conn, [event(b"new"), event(b"old3")])
        assert after[0].position == 52 and after[1].duplicate_of == 4
        assert [e.position for e in await reader.read(conn)] == list(range(1, 54))
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM events_p0")
    finally:
        await conn.close()


@pytest.mark.parametrize("pending", [[84, 85], [85]])
async def test_a_long_reader_delays_the_change_but_never_stops_appends(
    fresh_dsn: str, tmp_path: Path, pending: list[int]
) -> None:
    """Both steps wait for the log's exclusive lock at most 0.5 s at a time, then let go (of
    the append lock too) and try again: appends go on while a long transaction reads the log.
    With [85] pending, 084's CHECK is in place and the swap itself is what waits."""
    dsn = fresh_dsn
    conn, reader_conn, migrator = [await connect(dsn) for _ in range(3)]
    try:
        await migrate(conn, sql_before(tmp_path, 84))
        await write_batch(conn, [event(b"old%d" % i) for i in range(20)])
        if pending == [85]:
            (tmp_path / "sql" / "084_partitioned_log.sql").write_text(
                (SQL_DIR / "084_partitioned_log.sql").read_text()
            )
            assert await migrate(conn, tmp_path / "sql") == [84]
        await reader_conn.execute("BEGIN; SELECT count(*) FROM events")  # holds ACCESS SHARE
        migrating = asyncio.create_task(migrate(migrator))
        slowest = 0.0
        for i in range(15):  # ~1.5 s of appends while the swap cannot take its lock
            began = asyncio.get_running_loop().time()
            await write_batch(conn, [event(b"during%d" % i)])
            slowest = max(slowest, asyncio.get_running_loop().time() - began)
            await asyncio.sleep(0.1)
        assert not migrating.done(), "the swap did not wait for the reader"
        await reader_conn.execute("COMMIT")
        assert (await migrating)[: len(pending)] == pending  # and any later ones
        assert slowest < 0.8, f"an append waited {slowest:.2f}s behind the swap"
        await write_batch(conn, [event(b"after")])
        assert [e.position for e in await reader.read(conn)] == list(range(1, 37))
        assert (await partitions.list_partitions(conn))[0].name == "events_p0"
    finally:
        for c in (conn, reader_conn, migrator):
            await c.close()


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="needs the embedded server's trust login"
)
async def test_without_a_superuser_the_guard_is_skipped_with_a_notice(server_dsn: str) -> None:
    """Event triggers need a superuser: a role that only owns its database migrates (with a
    NOTICE saying so), gets its partitions, and nothing refuses a DROP by hand."""
    role = f"acklog_plain_{os.getpid()}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        async with new_database(server_dsn) as dsn:
            name = urllib.parse.urlsplit(dsn).path.lstrip("/")
            await admin.execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
            parts = urllib.parse.urlsplit(dsn)
            as_role = urllib.parse.urlunsplit(
                parts._replace(netloc=f"{role}@" + parts.netloc.rpartition("@")[2])
            )
            conn = await connect(as_role)
            notices: list[str] = []
            conn.add_log_listener(lambda _c, m: notices.append(m.message))
            try:
                assert (
                    await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role)
                    is False
                )
                await migrate(conn)
                assert any("not a superuser" in n for n in notices)
                await write_batch(conn, [event(b"e%d" % i) for i in range(3)])
                assert (await partitions.list_partitions(conn))[0].name == "events_p0"
                await conn.execute("DROP TABLE events_p1000001")  # unguarded
            finally:
                await conn.close()
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_archived_partitions_that_retention_dropped_restore_into_their_own_partition(
    small: asyncpg.Connection, tmp_path: Path
) -> None:
    """An archive restores with its positions even once retention dropped their partition:
    ``partitions.cover`` makes one for the range (below or between the partitions left)."""
    await write_batch(small, [event(b"e%d" % i, key=f"k{i}") for i in range(35)])
    before = [(e.position, e.body) for e in await reader.read(small)]
    store = ArchiveStore(f"file://{tmp_path}/archives")
    low = await archive.archive_range(small, store, 1, 10)  # events_p0: [MINVALUE, 11)
    middle = await archive.archive_range(small, store, 21, 30)  # events_p21
    await partitions.drop_partition(small, "events_p0")
    await partitions.drop_partition(small, "events_p21")
    assert [e.position for e in await reader.read(small)][:1] == [11]
    for manifest in (middle, low):  # in any order
        restored = await archive.restore(small, store, manifest)
        assert restored.inserted == 10
    assert [(e.position, e.body) for e in await reader.read(small)] == before
    names = {p.name for p in await partitions.list_partitions(small)}
    assert {"events_r1", "events_r21"} <= names
    assert await partitions.cover(small, 1, 35) == []  # covered now: nothing more to make
    again = await write_batch(small, [event(b"new")])  # the log goes on after the restore
    assert again[0].position == 36


_DEDUP_PLAN = (
    "EXPLAIN (COSTS OFF) SELECT e.position FROM events e"
    " WHERE e.channel = $1 AND e.dedup_key = $2 AND e.duplicate_of IS NULL"
)


async def _dedup_index_of(conn: asyncpg.Connection, partition: str) -> str:
    """The index the dedup lookup of append_events (a generic plan, no seq scan) reads in
    ``partition``, as a session planning it now would."""
    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute("SET LOCAL enable_seqscan = off")
        lines = [r[0] for r in await conn.fetch(_DEDUP_PLAN, "c1", "k")]
    for line in lines:
        if f" on {partition} " in line:
            return line.split(" using ")[1].split(" on ")[0]
    raise AssertionError(f"{partition} is not in the plan: {lines}")


async def test_a_partition_made_ahead_is_analyzed_once_it_holds_1000_events(
    small: asyncpg.Connection,
) -> None:
    """A partition made ahead is empty when ingest's sessions plan the dedup lookup; for an
    empty partition the planner takes the (channel, position) index and filters on the key,
    which reads every row of the channel in that partition per lookup. The append that
    takes the partition past its first 1,000 positions analyzes it (sql/091)."""
    await write_batch(small, [event(b"a%d" % i) for i in range(20)])
    assert (await partitions.ensure(small, 5000, ahead=1))[0] == "events_p21"
    await small.execute("VACUUM ANALYZE events_p21")  # what a vacuum of an empty one leaves
    assert await _dedup_index_of(small, "events_p21") == "events_p21_channel_position_idx"
    for b in range(3):  # 1..1500 of the partition: the 1,000th is in the third batch
        await write_batch(small, [event(b"b%d-%d" % (b, i)) for i in range(500)])
        analyzed = await small.fetchval(
            "SELECT reltuples FROM pg_class WHERE relname = 'events_p21'"
        )
        assert (analyzed >= 1000) == (b == 2), (b, analyzed)
    assert await _dedup_index_of(small, "events_p21") == "events_p21_dedup_first"
    # the lookup still finds a first copy in it
    again = await write_batch(small, [event(b"b1-7")])
    assert again[0].duplicate_of == 21 + 500 + 7


def aged(body: bytes, days: float) -> NewEvent:
    """An event received ``days`` ago."""
    return msgspec.structs.replace(
        event(body), received_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    )


DAY = 86400.0


async def test_the_dedup_floor_is_the_oldest_partition_with_an_event_in_the_window(
    small: asyncpg.Connection,
) -> None:
    """sql/092: the floor is the low bound of the oldest partition whose newest event is within
    the window; none (every partition) without a window or when the first partition is
    within it; the next position when nothing is."""
    assert await partitions.set_dedup_floor(small, 30 * DAY) == 1  # an empty log
    await write_batch(small, [aged(b"a%d" % i, 40) for i in range(20)])  # events_p0, p11
    assert await partitions.set_dedup_floor(small, 30 * DAY) == 21, "nothing recent"
    await write_batch(small, [aged(b"b%d" % i, 1) for i in range(5)])  # 21..25, events_p21
    assert await partitions.set_dedup_floor(small, 30 * DAY) == 21
    assert await partitions.dedup_floor(small) == 21
    assert await partitions.set_dedup_floor(small, 50 * DAY) is None  # events_p0 is in it
    assert await partitions.set_dedup_floor(small, 0.5 * DAY) == 26  # the next position
    assert await partitions.set_dedup_floor(small, None) is None
    assert await partitions.dedup_floor(small) is None


async def test_the_floor_walks_down_from_the_newest_partition_to_the_first_old_one(
    small: asyncpg.Connection,
) -> None:
    """The walk stops at the first partition whose newest event is out of the window: what
    lies below it is not read (the log is in order of receipt, so it is older still). Here a
    partition below an old one holds recent events, which only a log out of order has."""
    await write_batch(small, [aged(b"a%d" % i, 1) for i in range(10)])  # events_p0: recent
    await write_batch(small, [aged(b"b%d" % i, 40) for i in range(10)])  # events_p11: old
    await write_batch(small, [aged(b"c%d" % i, 1) for i in range(5)])  # events_p21: recent
    assert await partitions.ensure(small, 10, ahead=2) == ["events_p31", "events_p41"]
    assert await partitions.set_dedup_floor(small, 30 * DAY) == 21


async def test_a_copy_older_than_the_window_is_a_new_event_and_a_recent_one_a_duplicate(
    small: asyncpg.Connection,
) -> None:
    await write_batch(small, [aged(b"a%d" % i, 40) for i in range(20)])  # 1..20
    await write_batch(small, [aged(b"b%d" % i, 1) for i in range(5)])  # 21..25
    await partitions.set_dedup_floor(small, None)
    every = await write_batch(small, [event(b"a3"), event(b"b3")])
    assert [a.duplicate_of for a in every] == [4, 24], "no window: every partition"
    await partitions.set_dedup_floor(small, 30 * DAY)
    windowed = await write_batch(small, [event(b"a5"), event(b"b4"), event(b"b4")])
    # a5's first copy (position 6) is 40 days old: a new event; b4's (25) is a day old
    assert [a.duplicate_of for a in windowed] == [None, 25, 25]
    assert (await write_batch(small, [event(b"a5")]))[0].duplicate_of == windowed[0].position
    # with nothing in the window the floor is the next position: an event appended after it
    # is still found by its retry
    await partitions.set_dedup_floor(small, 1.0)
    fresh = await write_batch(small, [event(b"c1")])
    assert (await write_batch(small, [event(b"c1")]))[0].duplicate_of == fresh[0].position


async def _dedup_scans(conn: asyncpg.Connection) -> dict[str, int]:
    """idx_scan of each partition's dedup index, with this session's pending statistics
    flushed first (PostgreSQL 15+: flushed once the session is idle after the request)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(
        "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes"
        " WHERE indexrelname LIKE 'events%dedup_first'"
    )
    return {r["indexrelname"].removesuffix("_dedup_first"): r["idx_scan"] for r in rows}


async def test_the_lookup_probes_no_partition_below_the_floor(
    small: asyncpg.Connection,
) -> None:
    """The floor prunes: append_events' lookup reads no dedup index of a partition below it
    (the index scans PostgreSQL counts), and reads them all without a floor."""
    await write_batch(small, [aged(b"a%d" % i, 40) for i in range(20)])  # events_p0, p11
    await write_batch(small, [aged(b"b%d" % i, 1) for i in range(5)])  # events_p21
    assert await partitions.set_dedup_floor(small, 30 * DAY) == 21
    before = await _dedup_scans(small)
    for i in range(3):
        await write_batch(small, [event(b"c%d-%d" % (i, j)) for j in range(4)])
    after = await _dedup_scans(small)
    assert after["events_p0"] == before["events_p0"]
    assert after["events_p11"] == before["events_p11"]
    assert after["events_p21"] > before["events_p21"]
    await partitions.set_dedup_floor(small, None)
    await write_batch(small, [event(b"d%d" % j) for j in range(4)])
    every = await _dedup_scans(small)
    assert every["events_p0"] > after["events_p0"]
    assert every["events_p11"] > after["events_p11"]
