"""Rebuild the read models from the log without taking the read side down (invariant 9).

A rebuild folds the whole log into a fresh schema while the live projector and the query
side carry on, then, holding the live write lock, folds the last few events and swaps the
schemas in one transaction: readers see the old models or the new ones, never a half-built
table. ``verify`` folds aside up to exactly the live checkpoint and compares.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Callable

import asyncpg
import msgspec

from eventstore import archive, checkpoint, locks
from eventstore.archive_store import ArchiveStore
from eventstore.pool import connect
from eventstore.read import head
from eventstore.retention import oldest_kept
from projections.bulk import load_log
from projections.clock import Clock, utcnow
from projections.readmodel import LIVE, bulk, checkpoints, schema, write
from projections.readmodel.schema import Difference
from projections.runner import Projector
from projections.stages import Stages

__all__ = ["Difference", "Progress", "RebuildBusy", "bulk_load", "rebuild", "verify"]


class Progress(msgspec.Struct, frozen=True):
    done: int
    total: int
    rate: float
    eta_seconds: float | None


class RebuildBusy(RuntimeError):
    """Another rebuild or verify holds the lock."""


ProgressFn = Callable[[Progress], None]


async def _build_aside(
    conn: asyncpg.Connection,
    dsn: str,
    clock: Clock,
    progress: ProgressFn | None,
    *,
    upto: int | None = None,
    stages: Stages | None = None,
    workers: int | None = None,
    bulk_shards: int | None = None,
    bulk_reader: bool | None = None,
    cold: bool = False,
) -> Projector:
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", locks.REBUILD):
        raise RebuildBusy("another rebuild or verify is running")
    if cold and any(p for _, p in await checkpoints.positions(conn)):
        # a cold start's load, but another one swapped its models in since this projector
        # found no checkpoint (checkpoints are set before that rebuild let the lock go)
        raise RebuildBusy("the live read model was loaded meanwhile")
    aside = schema.fresh_name()
    await schema.create(conn, aside)
    name = f"rebuild:{aside}"
    builder = Projector(dsn, schema=aside, name=name, live=False, clock=clock, batch_size=2000)
    if stages is not None:
        builder.stages = stages
    total = upto if upto is not None else await head(conn)
    started = time.monotonic()

    def report(done: int) -> None:  # about how many events of the log are folded
        if progress is not None:
            rate = done / max(time.monotonic() - started, 1e-6)
            left = max(total - done, 0)
            progress(Progress(done, total, rate, left / rate if rate else None))

    # the bulk load, into tables nobody reads yet (see projections.bulk)
    await bulk.bulk_codecs(conn)
    restore = await bulk.defer_indexes(conn, aside)
    last = await load_log(
        conn,
        dsn,
        aside,
        total,
        workers=workers,
        shards=bulk_shards,
        reader=bulk_reader,
        stages=builder.stages,
        on_batch=report,
    )
    async with conn.transaction():
        with builder.stages.timed("indexes"):
            await bulk.restore_indexes(conn, aside, restore)
        if last:
            await checkpoint.advance(conn, name, 0, last)
    builder.position = last
    return builder


async def _drop(conn: asyncpg.Connection, builder: Projector) -> None:
    await schema.drop(conn, builder.schema)
    await checkpoint.drop(conn, builder.name)


async def rebuild(
    dsn: str,
    *,
    clock: Clock = utcnow,
    progress: ProgressFn | None = None,
    stages: Stages | None = None,
    workers: int | None = None,
    archives: ArchiveStore | None = None,
    shards: int | None = None,
    cold: bool = False,
    bulk_shards: int | None = None,
    bulk_reader: bool | None = None,
) -> int:
    """Replay the log into fresh tables and swap them in; returns the log's head. ``workers``:
    the bulk load's processes (None: ``bulk.default_workers``). ``archives``: the store that
    holds what retention dropped from the log; those events are folded first (archived +
    live), so a rebuild after retention keeps the messages it archived. ``shards``: the
    number of live projection shards to record with the swap (None: as recorded); every
    shard's checkpoint is set to the rebuilt position (``readmodel.checkpoints.swap_in``).
    ``cold``: a cold start's (:func:`bulk_load`), which gives up (``RebuildBusy``) if a live
    checkpoint has moved by the time it holds the rebuild lock. ``bulk_shards``: cut every
    task of the bulk load in that many shards by message key (None: ``bulk.tasks`` decides;
    the bench compares 1, 2 and 4). ``bulk_reader``: whether a group's shards are fed by one
    reader process (``bulk.load_log``'s ``reader``; None: the groups cut in shards)."""
    conn = await connect(dsn)
    builder: Projector | None = None
    source: str | None = None
    try:
        if archives is not None and (below := await oldest_kept(conn)) > 1:
            # the lock first (held again by _build_aside: session locks stack): a source is
            # made and any a dead rebuild left dropped only by the one rebuild running
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", locks.REBUILD):
                raise RebuildBusy("another rebuild or verify is running")
            await archive.drop_archived_sources(conn)
            source = await archive.archived_source(conn, archives, below)
            path = await conn.fetchval(
                "SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'),"
                " false)",
                f'"{source}"',
            )
            dsn = _with_search_path(dsn, path)
        builder = await _build_aside(
            conn,
            dsn,
            clock,
            progress,
            stages=stages,
            workers=workers,
            bulk_shards=bulk_shards,
            bulk_reader=bulk_reader,
            cold=cold,
        )
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
            await builder.catch_up(conn)  # the tail that arrived meanwhile
            await write.sweep(conn, builder.schema, clock())
            await checkpoints.swap_in(conn, builder.position, shards)
            await schema.swap_in(conn, builder.schema)
            await checkpoint.drop(conn, builder.name)
            await conn.execute("INSERT INTO rebuilds (position) VALUES ($1)", builder.position)
        builder = None
        return await head(conn)
    finally:
        if builder is not None:
            await _drop(conn, builder)
        if source is not None:
            await archive.drop_archived_source(conn, source)
        await conn.close()


def _with_search_path(dsn: str, path: str) -> str:
    """``dsn`` whose connections (the bulk load's worker processes) use ``path``: asyncpg
    sends a DSN's unknown query parameters as server settings."""
    return f"{dsn}{'&' if '?' in dsn else '?'}search_path={urllib.parse.quote(path, safe='')}"


async def bulk_load(dsn: str, clock: Clock, stages: Stages, *, workers: int | None = None) -> bool:
    """A cold live projector's catch-up (``Projector(bulk_load=bulk_load)``, see
    ``Projector.cold_start``): a rebuild; False when another rebuild or verify holds the lock,
    or another cold start loaded the models meanwhile (several shards start cold at once)."""
    try:
        await rebuild(dsn, clock=clock, stages=stages, workers=workers, cold=True)
    except RebuildBusy:
        return False
    return True


async def verify(
    dsn: str,
    *,
    clock: Clock = utcnow,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    bulk_shards: int | None = None,
    bulk_reader: bool | None = None,
) -> list[Difference]:
    """Rebuild aside up to the live checkpoint and list every table that differs (after
    retention, only what the log still holds can be compared: ``schema.compare``).

    With several projection shards, each has folded its share up to its own checkpoint:
    inside the (rolled back) transaction, holding the write lock, the shards behind the
    furthest one fold their share up to it first, so both sides meet at one position."""
    conn = await connect(dsn)
    builder: Projector | None = None
    try:
        # fold aside no further than the live projector has, so both can meet at its position
        live_at_start = max(p for _, p in await checkpoints.positions(conn))
        builder = await _build_aside(
            conn,
            dsn,
            clock,
            progress,
            upto=live_at_start,
            workers=workers,
            bulk_shards=bulk_shards,
            bulk_reader=bulk_reader,
        )
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
            live = await _shards_meet(conn, dsn, clock)
            await builder.catch_up(conn, upto=live)
            now: dt.datetime = clock()
            await write.sweep(conn, LIVE, now)  # same clock for both sides
            await write.sweep(conn, builder.schema, now)
            # after retention the log starts later: compare what it can rebuild
            diffs = await schema.compare(conn, builder.schema, await oldest_kept(conn))
        finally:
            await tx.rollback()  # verify changes nothing live, not even the sweep
        return diffs
    finally:
        if builder is not None:
            await _drop(conn, builder)
        await conn.close()


async def _shards_meet(conn: asyncpg.Connection, dsn: str, clock: Clock) -> int:
    """Fold every live shard up to the furthest one's checkpoint (write lock held, in the
    caller's transaction); returns that position."""
    layout = await checkpoints.positions(conn)
    top = max(p for _, p in layout)
    for k, (name, _) in enumerate(layout):
        behind = Projector(dsn, name=name, shard=k, shards=len(layout), live=False, clock=clock)
        await behind.catch_up(conn, upto=top)
    return top


class LastRebuild(msgspec.Struct, frozen=True, kw_only=True):
    finished_at: dt.datetime
    position: int


async def last_rebuild(conn: asyncpg.Connection | asyncpg.Pool) -> LastRebuild | None:
    """The most recent rebuild that swapped its models in, if any."""
    row = await conn.fetchrow("SELECT finished_at, position FROM rebuilds ORDER BY id DESC LIMIT 1")
    return LastRebuild(finished_at=row["finished_at"], position=row["position"]) if row else None
