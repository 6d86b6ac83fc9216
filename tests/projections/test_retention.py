"""Retention (projections/retention.py, eventstore/retention.py, sql/087) on a real
PostgreSQL with partitions of 10 positions: what a run archives and drops, that the archives
restore byte for byte, and that each part of the horizon keeps a partition in the log."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from eventstore import partitions
from eventstore import retention as records
from eventstore.append import write_batch
from eventstore.archive import listing, restore
from eventstore.archive_store import ArchiveStore
from eventstore.pool import connect
from projections import retention
from projections.feed.outbox import Outbox
from projections.readmodel import LIVE, write
from projections.readmodel import retention as rm_retention
from projections.runner import Projector
from tests.eventstore.test_archive import digest
from tests.projections.fold.test_projector import traffic
from tests.support.logs import partitioned_log

ZERO = dt.timedelta(0)


async def fill(conn: asyncpg.Connection, n_messages: int = 60) -> int:
    events = traffic(n_messages)
    for i in range(0, len(events), 7):  # several batches, so partitions are made as it goes
        await write_batch(conn, events[i : i + 7])
    return await partitions.next_position(conn) - 1


async def fold(dsn: str, conn: asyncpg.Connection) -> None:
    """Fold the log and derive the feed, then let every ack deadline pass (the sweep with a
    clock a year on)."""
    await Outbox(dsn).catch_up(conn)
    await Projector(dsn).catch_up(conn)
    await write.sweep(conn, LIVE, dt.datetime.now(dt.UTC) + dt.timedelta(days=365))


@contextlib.asynccontextmanager
async def folded_log(server_dsn: str) -> AsyncIterator[str]:
    """A new log in partitions of 10, filled (:func:`fill`) and folded (:func:`fold`)."""
    async with partitioned_log(server_dsn, 10) as dsn:
        conn = await connect(dsn)
        try:
            await fill(conn)
            await fold(dsn, conn)
        finally:
            await conn.close()
        yield dsn


def store_at(tmp_path: Path) -> ArchiveStore:
    return ArchiveStore(f"file://{tmp_path / 'archives'}")


async def test_a_run_archives_and_drops_every_safe_closed_partition(
    small: asyncpg.Connection, small_dsn: str, server_dsn: str, tmp_path: Path
) -> None:
    last = await fill(small)
    await fold(small_dsn, small)
    closed = [p for p in await partitions.list_partitions(small) if p.high <= last + 1]
    top = closed[-1].high - 1
    before = await digest(small_dsn, 1, top)
    store = store_at(tmp_path)

    done = await retention.run(small, store, ZERO)

    assert done.outcome == "ok" and done.partitions == len(closed) and done.rows == before[0]
    left = await partitions.list_partitions(small)
    assert [p.name for p in left if p.high <= last + 1] == []
    assert await retention.oldest_kept(small) == top + 1
    assert await small.fetchval("SELECT min(position) FROM events") == top + 1
    # every dropped position is in a verified archive, and they restore byte for byte
    found = await listing(store)
    assert sum(m.rows for m in found.archives) == before[0] and found.unclaimed == []
    async with partitioned_log(server_dsn, 1_000_000) as other:
        conn = await connect(other)
        try:
            for m in found.archives:
                await restore(conn, store, m)
        finally:
            await conn.close()
        assert await digest(other, 1, top) == before
    # the 410's lookup names the archive of a dropped position
    held = await records.holding(small, 5)
    assert held is not None and held.archive is not None and held.archive_url == store.url
    assert held.dropped_at is not None and held.verified_at is not None
    # a second run has nothing to do
    again = await retention.run(small, store, ZERO)
    assert again.outcome == "nothing" and again.partitions == 0


async def test_a_partition_with_recent_events_stays(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    await fill(small)
    await fold(small_dsn, small)
    done = await retention.run(small, store_at(tmp_path), dt.timedelta(days=1))
    assert done.outcome == "nothing"
    assert (await partitions.list_partitions(small))[0].name == "events_p0"


async def test_events_not_yet_folded_stay(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    await fill(small)
    await Outbox(small_dsn).catch_up(small)
    await Projector(small_dsn).catch_up(small, upto=25)
    await write.sweep(small, LIVE, dt.datetime.now(dt.UTC) + dt.timedelta(days=365))
    await retention.run(small, store_at(tmp_path), ZERO)
    h = await retention.horizon(small)
    assert h.position == 26 and "checkpoint messages" in h.reason
    left = await partitions.list_partitions(small)
    assert left[0].low is not None and left[0].low <= 26 < left[0].high


async def test_events_the_feed_still_owes_stay(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    await fill(small)
    await fold(small_dsn, small)
    s0 = await small.fetchval("SELECT coalesce(max(seq), 0) FROM feed.events")
    await small.execute(
        "INSERT INTO feed.events (seq, id, type, channel, position, body)"
        " VALUES ($1 + 1, gen_random_uuid(), 'message.sent', 'c1', 33, ''), "
        "        ($1 + 2, gen_random_uuid(), 'message.sent', 'c1', 44, '')",
        s0,
    )
    await small.execute(
        "INSERT INTO feed.subscriptions (name, url, cursor) VALUES ('a', 'x', $1 + 1)", s0
    )
    await small.execute(
        "INSERT INTO feed.subscriptions (name, url, cursor, status)"
        " VALUES ('b', 'x', $1 + 2, 'paused')",
        s0,
    )
    h = await retention.horizon(small)
    assert h.position == 44 and "feed" in h.reason
    await retention.run(small, store_at(tmp_path), ZERO)
    left = await partitions.list_partitions(small)
    assert left[0].low is not None and left[0].low <= 44 < left[0].high
    # delivered (the cursor past it): no longer owed
    await small.execute("UPDATE feed.subscriptions SET cursor = $1 + 2", s0)
    assert (await retention.horizon(small)).position > 44


async def test_a_message_inside_its_ack_deadline_keeps_its_events(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    await fill(small)
    await fold(small_dsn, small)
    key = await small.fetchval(
        "SELECT key FROM rm.messages ORDER BY first_position LIMIT 1 OFFSET 5"
    )
    first = await small.fetchval("SELECT first_position FROM rm.messages WHERE key = $1", key)
    await small.execute(
        "UPDATE rm.messages SET state = 'sending', sent_due_at = now() + interval '1 hour',"
        " missed_sent = false WHERE key = $1",
        key,
    )
    h = await retention.horizon(small)
    assert h.position == first and "ack deadline" in h.reason
    await retention.run(small, store_at(tmp_path), ZERO)
    assert await retention.oldest_kept(small) <= first


async def test_the_waiting_floor_is_one_probe_of_its_own_index(small: asyncpg.Connection) -> None:
    """sql/089's partial index answers retention's "oldest message still waiting" without
    reading the messages that no longer wait (it did: 0.3-1.3 s on 489k messages, under
    ingest, before each partition's detach)."""
    # plan as on a big table: the planner would read a tiny one whole
    await small.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
    plan = await small.fetchval(f"EXPLAIN (FORMAT JSON) {rm_retention.WAITING_FLOOR_SQL}")
    text = str(plan)
    assert "Index Only Scan" in text and "messages_first_position_idx" in text, text


async def test_a_partition_is_counted_from_its_primary_key_alone(
    small: asyncpg.Connection,
) -> None:
    """What a run counts of each partition it takes is an index-only scan of its primary
    key, not a read of the partition's rows at the database's normal priority."""
    await small.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
    plan = await small.fetchval(f"EXPLAIN (FORMAT JSON) {records.SPAN_SQL}", 1, 10)
    text = str(plan)
    assert "Index Only Scan" in text and "events_p0_pkey" in text, text


async def test_no_archive_store_fails_the_run_and_drops_nothing(
    small: asyncpg.Connection, small_dsn: str
) -> None:
    await fill(small)
    await fold(small_dsn, small)
    with pytest.raises(retention.RetentionError, match="ACKLOG_ARCHIVE_URL"):
        await retention.run(small, None, ZERO)
    runs = await records.last_runs(small)
    assert runs[0].outcome == "failed" and "ACKLOG_ARCHIVE_URL" in (runs[0].error or "")
    assert (await partitions.list_partitions(small))[0].name == "events_p0"


async def test_the_read_model_forgets_old_messages(
    small: asyncpg.Connection, small_dsn: str
) -> None:
    await fill(small)
    await fold(small_dsn, small)
    n = await small.fetchval("SELECT count(*) FROM rm.messages")
    assert await retention.forget_messages(small, dt.timedelta(days=1)) == 0
    assert await retention.forget_messages(small, ZERO) == n
    assert await small.fetchval("SELECT count(*) FROM rm.timeline") == 0


async def test_verify_passes_after_a_retention_run(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    from projections.rebuild import verify as verify_now

    def later() -> dt.datetime:  # fold's sweep: every deadline past
        return dt.datetime.now(dt.UTC) + dt.timedelta(days=365)

    async def verify(dsn: str) -> list[Any]:
        return await verify_now(dsn, clock=later)

    await fill(small)
    await fold(small_dsn, small)
    assert await verify(small_dsn) == []
    await retention.run(small, store_at(tmp_path), ZERO)
    assert await retention.oldest_kept(small) > 100
    assert await verify(small_dsn) == []
    # new messages after the drop, then a change to one of them: found
    await write_batch(small, traffic(10, seed=1))
    await fold(small_dsn, small)
    assert await verify(small_dsn) == []
    await small.execute("UPDATE rm.messages SET text = 'changed' WHERE key = 'wamid.1.3'")
    assert [d.table for d in await verify(small_dsn)] == ["messages"]


async def test_a_rebuild_folds_archived_and_live_events(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After retention, ``rebuild(archives=store)`` folds what the archives hold before the
    log (an archived source put first on the search path, its worker processes included), so
    the read models equal those of the whole log; without the store they lose those
    messages (what ``acklog rebuild`` without ``ACKLOG_ARCHIVE_URL`` does)."""
    from projections import bulk
    from projections import rebuild as rebuilding
    from projections.rebuild import rebuild

    # two channels, one shard each, so the bulk load runs in worker processes even on a
    # small log (they connect by the DSN, which carries the archived source's search path)
    monkeypatch.setattr(
        rebuilding, "load_log", functools.partial(bulk.load_log, min_events_per_shard=1)
    )
    tables = ("messages", "timeline", "receipts")

    async def read_models() -> dict[str, list[str]]:
        return {
            t: [
                r["r"]
                for r in await small.fetch(f"SELECT t::text AS r FROM rm.{t} t ORDER BY t::text")
            ]
            for t in tables
        }

    await fill(small, n_messages=300)
    other = [msgspec.structs.replace(e, channel="c2") for e in traffic(100, seed=7)]
    for i in range(0, len(other), 7):
        await write_batch(small, other[i : i + 7])
    await fold(small_dsn, small)
    await rebuild(small_dsn, workers=2)  # the models as a rebuild of the whole log makes them
    await fold(small_dsn, small)  # every ack deadline past again (a rebuild sweeps with now)
    whole = await read_models()
    store = store_at(tmp_path)
    await retention.run(small, store, ZERO)
    assert await retention.oldest_kept(small) > 100
    await rebuild(small_dsn, workers=2)  # the log alone: the archived messages are gone
    assert len((await read_models())["messages"]) < len(whole["messages"])
    # a source a killed rebuild left behind (archived bodies as they were) goes too
    await small.execute("CREATE SCHEMA acklog_src_999999")
    await rebuild(small_dsn, workers=2, archives=store)  # archived + live
    await fold(small_dsn, small)  # the same sweep as before ``whole``
    assert await read_models() == whole
    assert (
        await small.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'acklog\\_src\\_%'"
        )
        == 0
    ), "the archived source is dropped after the rebuild"


async def test_a_rebuild_in_progress_keeps_every_partition(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    from eventstore import locks

    await fill(small)
    await fold(small_dsn, small)
    rebuilding = await connect(small_dsn)
    try:
        assert await rebuilding.fetchval("SELECT pg_try_advisory_lock($1)", locks.REBUILD)
        steps: list[tuple[str, str]] = []
        await retention.run(
            small, store_at(tmp_path), ZERO, on_step=lambda s, p: steps.append((s, p))
        )
        assert ("detach", "events_p0") not in steps and steps[-1][0] == "kept"
        assert (await partitions.list_partitions(small))[0].name == "events_p0"
    finally:
        await rebuilding.close()
    # archived and verified already: the next run only detaches and drops
    steps = []
    await retention.run(small, store_at(tmp_path), ZERO, on_step=lambda s, p: steps.append((s, p)))
    assert steps[:2] == [("detach", "events_p0"), ("drop", "events_p0")]


async def test_an_empty_partition_is_dropped_without_an_archive(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    await fill(small, 3)  # a few events in events_p0
    tx = small.transaction()
    await tx.start()
    await write_batch(small, traffic(8, seed=2))  # positions drawn, then rolled back: a gap
    await tx.rollback()
    await write_batch(small, traffic(20, seed=3))
    await fold(small_dsn, small)
    empty = [
        p
        for p in await partitions.list_partitions(small)
        if (await records.span(small, p.low or 1, p.high - 1)).rows == 0
        and p.high <= await partitions.next_position(small)
    ]
    assert empty, "the rolled-back positions left an empty closed partition"
    store = store_at(tmp_path)
    await retention.run(small, store, ZERO)
    held = await records.progress(small, empty[0].name)
    assert held is not None and held.archive is None and held.dropped_at is not None
    assert len((await listing(store)).archives) == (
        await small.fetchval("SELECT count(*) FROM retention_partitions WHERE archive IS NOT NULL")
    )


async def test_the_feed_not_yet_derived_keeps_everything(
    small: asyncpg.Connection, small_dsn: str, tmp_path: Path
) -> None:
    await fill(small)
    await Projector(small_dsn).catch_up(small)
    await write.sweep(small, LIVE, dt.datetime.now(dt.UTC) + dt.timedelta(days=365))
    h = await retention.horizon(small)
    assert h.position == 1 and "checkpoint feed at 0" in h.reason
    await Outbox(small_dsn).catch_up(small, upto=30)
    assert (await retention.horizon(small)).position == 31
