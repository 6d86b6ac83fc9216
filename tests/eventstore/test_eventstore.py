"""The log: byte-exact, append-only, duplicates kept and marked, readers never skip."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re

import asyncpg
import pytest

from eventstore import read as reader
from eventstore.append import Appender, write_batch
from eventstore.events import NewEvent
from eventstore.migrate import load, migrate
from eventstore.pool import create_pool
from tests.support import REPO


def event(body: bytes, channel: str = "c1", event_id: str | None = None) -> NewEvent:
    return NewEvent(
        channel=channel,
        provider="wamm",
        body=body,
        received_at=dt.datetime.now(dt.UTC),
        content_type="application/json",
        headers={"user-agent": "t"},
    ).with_dedup_key(event_id)


async def test_bytes_are_stored_exactly(pool: asyncpg.Pool) -> None:
    bodies = [b"", b"\x00\xff\xfe not utf-8", b'{"a": 1}', bytes(range(256)) * 10]
    async with pool.acquire() as conn:
        appended = await write_batch(conn, [event(b) for b in bodies])
    got = await reader.read(pool, after=0)
    assert [e.body for e in got] == bodies
    assert [e.position for e in got] == [a.position for a in appended]
    assert got[0].headers == {"user-agent": "t"}


async def test_log_is_append_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, [event(b"x")])
        for sql in (
            "UPDATE events SET body = 'y'",
            "DELETE FROM events",
            "TRUNCATE events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
    assert [e.body for e in await reader.read(pool)] == [b"x"]


async def test_duplicates_are_kept_and_marked(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await write_batch(conn, [event(b"a"), event(b"b", event_id="19")])
        # in-batch duplicate, cross-batch duplicates by body and by provider event id,
        # and the same body on another channel (not a duplicate there)
        second = await write_batch(
            conn,
            [
                event(b"c"),
                event(b"c"),
                event(b"a"),
                event(b"other body, same id", event_id="19"),
                event(b"a", channel="c2"),
            ],
        )
    assert [a.duplicate_of for a in first] == [None, None]
    assert [a.duplicate_of for a in second] == [
        None,
        second[0].position,
        first[0].position,
        first[1].position,
        None,
    ]
    assert len(await reader.read(pool)) == 7


async def test_migrations_apply_once(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        assert await migrate(conn) == []  # the template already has them all
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [m.version for m in load()]
    finally:
        await conn.close()


async def test_group_commit_batches_concurrent_appends(pool: asyncpg.Pool) -> None:
    sizes: list[int] = []
    appender = Appender(pool, on_batch=sizes.append)
    await appender.start()
    try:
        results = await asyncio.gather(*(appender.append(event(b"%d" % i)) for i in range(200)))
    finally:
        await appender.stop()
    assert sorted(r.position for r in results) == [e.position for e in await reader.read(pool)]
    assert sum(sizes) == 200
    assert len(sizes) < 200, "concurrent appends must share transactions"


async def test_a_writer_connection_aborted_mid_outage_never_keeps_the_pool_open(
    dsn: str,
) -> None:
    """asyncpg aborts a connection on a protocol error (seen mid-outage: "cannot switch to
    state 12; another operation is in progress") without freeing its pool slot; the slot is
    freed only when the holder terminates or releases it. A writer that dropped such a
    connection without either left ``Pool.close()`` waiting for ever: ``acklog serve``'s
    ingest worker never exited after SIGTERM once the database had restarted under load."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    appender = Appender(pool)
    await appender.start()
    try:
        await appender.append(event(b"before the abort"))
        [held] = [c for c in appender._conns if c is not None]  # the writer's own connection
        held._con._protocol.abort()  # what asyncpg's _coreproto_error does: a fault, no mock
        after = await appender.append(event(b"after the abort"))  # on a fresh connection
    finally:
        await appender.stop()
    async with asyncio.timeout(10):  # before the fix: TimeoutError, the slot never freed
        await pool.close()
    assert after.position > 0 and not after.duplicate_of


async def test_racing_writers_never_make_a_tailing_reader_skip(pool: asyncpg.Pool) -> None:
    """Invariant 3: several writers commit out of order; a tailer sees every event once."""
    writers, per_writer = 6, 400
    done = asyncio.Event()

    async def writer(w: int) -> None:
        rng = random.Random(w)
        async with pool.acquire() as conn:
            i = 0
            while i < per_writer:
                n = rng.randint(1, 20)
                batch = [event(b"w%d-%d" % (w, i + k)) for k in range(min(n, per_writer - i))]
                async with conn.transaction():
                    await write_batch(conn, batch)
                    # hold the transaction open a little so commits interleave
                    await asyncio.sleep(rng.random() * 0.002)
                i += len(batch)

    async def tail() -> list[int]:
        seen: list[int] = []
        after = 0
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            finished = done.is_set()
            batch = await reader.read(pool, after=after, limit=97)
            seen.extend(e.position for e in batch)
            if batch:
                after = batch[-1].position
            elif finished:
                return seen
        raise AssertionError(f"the tailer did not see the end within 60 s ({len(seen)} seen)")

    tailer = asyncio.create_task(tail())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    seen = await tailer
    every = [e.position for e in await reader.read(pool, limit=100_000)]
    assert len(every) == writers * per_writer
    assert seen == every, "the tailing reader skipped or reordered events"


async def test_a_session_plan_made_on_a_small_log_never_scans_the_grown_log(
    pool: asyncpg.Pool,
) -> None:
    """A writer keeps its session for hours and append_events keeps its plan
    (sql/011_append_generic_plan.sql): a plan made while the log was small must still find
    duplicates through the index once the log has grown, not by scanning the log."""
    async with pool.acquire() as conn:
        await write_batch(conn, [event(b"first")])
        await conn.execute("ANALYZE events")  # the statistics of a one-row log
        for i in range(8):  # past the point where a plan is cached for the session
            await write_batch(conn, [event(b"early %d" % i)])
        await conn.execute(
            "INSERT INTO events (received_at, channel, provider, headers, body, dedup_key)"
            " SELECT now(), 'c1', 'wamm', '{}', 'x', 'grown:' || i FROM generate_series(1, 5000) i"
        )
        async with conn.transaction():
            appended = await write_batch(conn, [event(b"late"), event(b"early 3")])
            scans = await conn.fetchrow(  # the log's partitions (sql/084)
                "SELECT sum(seq_scan) AS seq_scan, sum(idx_scan) AS idx_scan"
                " FROM pg_stat_xact_user_tables WHERE relid IN"
                " (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'events'::regclass)"
            )
    assert appended[0].duplicate_of is None and appended[1].duplicate_of is not None
    assert scans["seq_scan"] == 0, "the dedup lookup scanned the whole log"
    assert scans["idx_scan"] >= 2


# --- one owner: every statement on the channel registry lives in eventstore/channels.py ----

_ROOT = REPO
_REGISTRY_SQL = re.compile(
    r"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+(channels|channel_tokens|channel_secrets)\b"
)


def test_no_sql_on_the_channel_registry_outside_its_owner() -> None:
    owner = _ROOT / "eventstore" / "channels.py"
    offenders = []
    for folder in ("service", "projections", "eventstore"):
        for path in sorted((_ROOT / folder).rglob("*.py")):
            if path == owner:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _REGISTRY_SQL.search(line):
                    offenders.append(f"{path.relative_to(_ROOT)}:{n}: {line.strip()}")
    assert offenders == []
    assert _REGISTRY_SQL.search('"SELECT name FROM channels"')
    assert _REGISTRY_SQL.search('"UPDATE channel_tokens SET revoked_at = now()"')
    assert any(_REGISTRY_SQL.search(line) for line in owner.read_text().splitlines())
