"""Retention (issue 23, part 2): old partitions of the log leave it in separate, restartable
steps, each recorded once done (eventstore/retention.py, sql/087):

1. archive: the partition's events as Parquet + manifest (eventstore.archive; the manifest is
   the commit point; a run killed after it adopts the archive it finds);
2. verify: the archive read back whole, and its row count equal to the partition's;
3. detach: the partition leaves the log (its table stays);
4. drop: the table is dropped, only once verified.

So at every moment each event is in the log, or in a verified archive, or both.

A partition is a candidate when it is closed (below the log's next position), its newest
event arrived before ``now - older_than``, and it lies wholly below the **horizon**: the
smallest position something still needs, which is the lowest of

- every checkpoint in ``checkpoints`` + 1 (the live projector, the feed's outbox, a rebuild
  folding aside): events not yet folded or derived (the live projector's and the outbox's
  count from 0 until they first run);
- the oldest position whose feed events a subscription, active or paused, still owes
  (projections.feed.horizon; dead-lettered ones are done);
- the first position of a message still waiting inside an ack deadline
  (projections.readmodel.retention).

A run is paced: it reads the log's rows at most ``rate`` events per second
(``ACKLOG_RETENTION_RATE``), as autovacuum's cost delay paces vacuum, so the PostgreSQL work
of a run that takes old partitions away while webhooks arrive stays a bounded share of the
machine (its own process runs at ``SCHED_IDLE`` too); it checks each archive back at
``VERIFY_SPEEDUP`` times that rate. ``rate`` 0 reads and checks as fast as it can.

One run at a time per database: a run holds the session advisory lock ``locks.RETENTION``;
a second one, on any machine, waits for it. A partition is detached and dropped only while
the run holds ``locks.REBUILD`` shared: a rebuild or verify (which hold it exclusively while
they fold the log in bulk, before they have a checkpoint) keeps every partition in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

import asyncpg
import msgspec
from aiolimiter import AsyncLimiter

from eventstore import archive, checkpoint, locks, partitions
from eventstore import retention as records
from eventstore.archive_store import ArchiveStore, ArchiveStoreError
from eventstore.errors import DRIVER_ERRORS
from eventstore.pool import connect
from projections.feed import horizon as feed_horizon
from projections.feed.outbox import FEED_CHECKPOINT
from projections.readmodel import checkpoints as live_checkpoints
from projections.readmodel import retention as rm_retention

log = logging.getLogger(__name__)
#: the database lost or refused: the role waits for the next run
_LOST: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, OSError)

#: ``on_step(step, partition)``: after each step is done and before it is recorded (steps:
#: archive, verify, detach, drop), and ("waiting", holder) while another run holds the lock
StepFn = Callable[[str, str], None]


class RetentionError(Exception):
    """A run could not finish (one line: what and why); nothing unverified was dropped."""


class Horizon(msgspec.Struct, frozen=True, kw_only=True):
    """The smallest position still needed, and what holds it there."""

    position: int
    reason: str


async def horizon(conn: asyncpg.Connection) -> Horizon:
    """The smallest position some reader still needs (see the module's docstring)."""
    nxt = await partitions.next_position(conn)
    found: list[tuple[int, str]] = [(nxt, "the log's next position")]
    names = {name: position for name, position, _ in await checkpoint.all_checkpoints(conn)}
    # the live projector (each of its shards) and the feed's outbox fold every event: until
    # one has run, it still needs them all
    for live in live_checkpoints.names(await checkpoint.recorded_shards(conn)):
        names.setdefault(live, 0)
    names.setdefault(FEED_CHECKPOINT, 0)
    for name, position in names.items():
        found.append((position + 1, f"checkpoint {name} at {position}"))
    owed = await feed_horizon.owed_floor(conn)
    if owed is not None:
        found.append((owed, f"the feed still owes events of position {owed}"))
    waiting = await rm_retention.waiting_floor(conn)
    if waiting is not None:
        found.append((waiting, f"a message from position {waiting} waits inside an ack deadline"))
    position, reason = min(found)
    return Horizon(position=position, reason=reason)


oldest_kept = records.oldest_kept
oldest_of = records.oldest_of


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    horizon: Horizon
    next_position: int
    #: partitions a run would take (resumed ones first)
    take: list[str]
    #: closed partitions kept, and why
    kept: list[tuple[str, str]]


async def plan(
    conn: asyncpg.Connection, older_than: dt.timedelta, *, now: dt.datetime | None = None
) -> Plan:
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - older_than
    h = await horizon(conn)
    nxt = await partitions.next_position(conn)
    parts = await partitions.list_partitions(conn, count=False)
    unfinished = {p.name for p in await records.unfinished(conn)}
    # dropped by a run killed before it recorded the drop: only the record is left to do
    take: list[str] = sorted(unfinished - {p.name for p in parts})
    kept: list[tuple[str, str]] = []
    for part in parts:
        if part.name in unfinished or not part.attached:
            take.append(part.name)
            continue
        if part.high > nxt:
            continue
        if part.high > h.position:
            kept.append((part.name, f"not safe yet: {h.reason}"))
            continue
        newest = await records.last_received(conn, part.low or 1, part.high - 1)
        if newest is not None and newest >= cutoff:
            kept.append((part.name, f"its newest event arrived {newest.isoformat()}"))
            continue
        take.append(part.name)
    return Plan(horizon=h, next_position=nxt, take=take, kept=kept)


async def run(
    conn: asyncpg.Connection,
    store: ArchiveStore | str | None,
    older_than: dt.timedelta,
    *,
    now: dt.datetime | None = None,
    on_step: StepFn | None = None,
    rate: int = 0,
) -> records.Run:
    """One retention run (waits for the lock); its record. ``store``: the archive store or
    its URL. ``rate``: events read from the log per second at most (0: unpaced).
    ``RetentionError`` (the run is recorded failed) when a step fails: the store
    unreachable or full, an archive corrupt."""
    step = on_step or (lambda _s, _p: None)
    pace = AsyncLimiter(rate, 1) if rate > 0 else None
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", locks.RETENTION):
        holder = await locks.holder(conn, locks.RETENTION)
        step("waiting", f"pid {holder.pid} {holder.application_name}" if holder else "?")
        await conn.execute("SELECT pg_advisory_lock($1)", locks.RETENTION)
    try:
        await records.abandon_running(conn)
        run_id = await records.start_run(conn, older_than)
        try:
            if store is None:
                raise RetentionError(
                    "ACKLOG_ARCHIVE_URL is not set: retention archives every partition before"
                    " it drops it"
                )
            if isinstance(store, str):
                store = ArchiveStore(store)
            todo = await plan(conn, older_than, now=now)
            dropped = 0
            for name in todo.take:
                dropped += await _take(conn, store, run_id, name, step, pace)
        except (RetentionError, archive.ArchiveError, ArchiveStoreError) as exc:
            await records.finish_run(conn, run_id, "failed", error=str(exc))
            raise RetentionError(str(exc)) from exc
        except Exception as exc:
            text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            with contextlib.suppress(Exception):
                await records.finish_run(conn, run_id, "failed", error=text)
            raise RetentionError(text) from exc
        done = await records.finish_run(conn, run_id, "ok" if dropped else "nothing")
        return done
    finally:
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock($1)", locks.RETENTION)


async def _take(
    conn: asyncpg.Connection,
    store: ArchiveStore,
    run_id: int,
    name: str,
    step: StepFn,
    pace: AsyncLimiter | None,
) -> bool:
    """Take partition ``name`` through the steps it has yet to do; whether it was dropped."""
    parts = {p.name: p for p in await partitions.list_partitions(conn, count=False)}
    part = parts.get(name)
    rec = await records.progress(conn, name)
    if part is None:  # dropped by a run killed before it recorded the drop
        if rec is not None:
            await records.dropped(conn, name)
        return rec is not None
    first, last = part.low or 1, part.high - 1
    if rec is None or rec.detached_at is None:
        got = await records.span(conn, first, last) if part.attached else None
        rows = got.rows if got is not None else part.rows
        rec = await records.take_on(conn, run_id, name, first, last, rows, part.bytes)
    else:
        got = None
    if rec.archived_at is None:
        if not part.attached:
            raise RetentionError(
                f"{name} was detached from the log without an archive: attach it back"
                " (ALTER TABLE events ATTACH PARTITION) and run retention again"
            )
        assert got is not None
        if got.rows == 0:
            await records.archived(conn, name, None, None)
        else:
            assert got.first is not None and got.last is not None
            wanted = archive.name_of(got.first, got.last)
            try:
                manifest = await archive.manifest_of(store, wanted)  # a killed run's
            except archive.ArchiveError:
                manifest = await archive.archive_range(conn, store, got.first, got.last, pace=pace)
            step("archive", name)
            await records.archived(conn, name, manifest.name, store.url)
        rec = await records.progress(conn, name)
        assert rec is not None
    if rec.verified_at is None:
        if rec.archive is not None:
            manifest = await archive.manifest_of(store, rec.archive)
            await archive.verify(store, manifest, pace=_verify_pace(pace))
            if manifest.rows != rec.rows:
                raise RetentionError(
                    f"archive {manifest.name} holds {manifest.rows} events, partition {name}"
                    f" {rec.rows}: not dropped"
                )
        step("verify", name)
        await records.verified(conn, name)
    # a rebuild or verify folding the log in bulk has no checkpoint yet: it holds the
    # REBUILD lock, and a partition it has yet to read must not leave under it
    if not await conn.fetchval("SELECT pg_try_advisory_lock_shared($1)", locks.REBUILD):
        step("kept", f"{name} (a rebuild or verify is reading the log)")
        return False
    try:
        if part.attached:
            h = await horizon(conn)
            if part.high > h.position:
                return False  # archived and verified, kept in the log until it is safe
            await partitions.detach_partition(conn, name)
            step("detach", name)
            await records.detached(conn, name)
        await partitions.drop_partition(conn, name)
        step("drop", name)
        await records.dropped(conn, name)
        return True
    finally:
        await conn.execute("SELECT pg_advisory_unlock_shared($1)", locks.REBUILD)


#: a paced run checks an archive this many times faster than it read the log: a row costs
#: verify about a quarter of what reading and archiving it costs (bench lifecycle: 289k
#: against 131k events/s, the read's PostgreSQL work aside)
VERIFY_SPEEDUP = 4


def _verify_pace(pace: AsyncLimiter | None) -> AsyncLimiter | None:
    return None if pace is None else AsyncLimiter(pace.max_rate * VERIFY_SPEEDUP, 1)


async def forget_messages(conn: asyncpg.Connection, keep: dt.timedelta) -> int:
    """The read model's own retention: messages last active more than ``keep`` ago go, with
    their timelines and receipts; how many."""
    return await rm_retention.forget_older_than(conn, dt.datetime.now(dt.UTC) - keep)


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """What the retention role does every ``interval``."""

    older_than: dt.timedelta
    interval: dt.timedelta
    archive_url: str | None
    #: the read model's own retention (None: keep every message)
    readmodel_keep: dt.timedelta | None = None
    #: events read from the log per second at most (0: unpaced)
    rate: int = 0


async def scheduled(dsn: str, schedule: Schedule) -> None:
    """The retention role: a run every ``schedule.interval``, forever. A failed run is
    recorded and logged, and the next one tries again; a lost database is waited for."""

    def step(what: str, name: str) -> None:
        if what == "waiting":
            log.info("retention: waiting, another run holds the lock (%s)", name)
        else:
            log.info("retention: %s %s", what, name)

    while True:
        try:
            conn = await connect(dsn)
            try:
                done = await run(
                    conn,
                    schedule.archive_url,
                    schedule.older_than,
                    on_step=step,
                    rate=schedule.rate,
                )
                log.info(
                    "retention: run %d %s, dropped %d partitions, %d events, %d bytes",
                    done.id,
                    done.outcome,
                    done.partitions,
                    done.rows,
                    done.bytes,
                )
                if schedule.readmodel_keep is not None:
                    gone = await forget_messages(conn, schedule.readmodel_keep)
                    if gone:
                        log.info("retention: %d messages left the read model", gone)
            finally:
                await conn.close()
        except RetentionError as exc:
            log.error("retention failed: %s (nothing unverified was dropped)", exc)
        except _LOST as exc:
            log.warning(
                "retention: the database failed (%s); next run in %s", exc, schedule.interval
            )
        await asyncio.sleep(schedule.interval.total_seconds())
