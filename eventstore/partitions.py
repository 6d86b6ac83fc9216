"""The log's partitions (sql/084, sql/085): every statement on them lives here.

``events`` is partitioned by position range. Partitions are made ahead of need by
:func:`ensure` (the ingest role, at start and every minute), and by ``append_events`` itself,
under the append lock, when those have run out, so an append never fails for want of one.
A DROP or DETACH of a log partition by hand is refused by an event trigger; only
:func:`detach_partition` and :func:`drop_partition` (retention) pass it, by setting
``acklog.retention`` for their own transaction.
"""

from __future__ import annotations

import asyncpg
import msgspec

from eventstore import locks

#: partitions made ahead of the next position (each ``size`` positions)
AHEAD = 2

_NEXT = (
    "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM events_position_seq"
)


class Partition(msgspec.Struct, frozen=True, kw_only=True):
    """One partition: positions ``low <= position < high`` (``low`` None: from the start)."""

    name: str
    low: int | None
    high: int
    attached: bool
    #: the planner's count (exact after VACUUM or ANALYZE); counted when it has none yet
    rows: int
    #: table, indexes and TOAST
    bytes: int


class PartitionInUse(Exception):
    """The partition holds, or will hold, the newest positions; retention may not take it."""


class NotAPartition(LookupError):
    """No log partition has this name."""


async def next_position(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The position the next appended event will get."""
    return int(await conn.fetchval(_NEXT))


async def list_partitions(
    conn: asyncpg.Connection | asyncpg.Pool, *, count: bool = True
) -> list[Partition]:
    """Every partition of the log not yet dropped, attached or detached, in position order
    (``count=False``: a partition never analyzed shows 0 rows instead of being counted, for
    the metrics snapshot, which must stay cheap)."""
    rows = await conn.fetch(
        "SELECT p.name, p.low, p.high, p.detached_at IS NULL AS attached, c.reltuples,"
        " coalesce(pg_total_relation_size(c.oid), 0) AS bytes"
        " FROM events_partitions p LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(p.name))"
        " ORDER BY p.high"
    )
    found = []
    for r in rows:
        rows_ = int(r["reltuples"] if r["reltuples"] is not None else 0)
        if rows_ < 0 and not count:
            rows_ = 0
        elif rows_ < 0:  # never vacuumed nor analyzed
            name = await conn.fetchval("SELECT quote_ident($1)", r["name"])
            rows_ = int(await conn.fetchval(f"SELECT count(*) FROM {name}"))
        found.append(
            Partition(
                name=r["name"],
                low=r["low"],
                high=r["high"],
                attached=r["attached"],
                rows=rows_,
                bytes=r["bytes"],
            )
        )
    return found


async def ensure(conn: asyncpg.Connection, size: int, ahead: int = AHEAD) -> list[str]:
    """Store ``size`` (positions per new partition) and make partitions until the next
    position and the ``ahead * size`` after it have one (the next position's partition and
    ``ahead`` more); returns the ones made.

    Nothing is locked when they exist already (the usual case); otherwise the append lock is
    held while they are made (milliseconds: CREATE TABLE and ATTACH of empty tables)."""
    if size < 1 or ahead < 0:
        raise ValueError("a partition spans at least one position, made zero or more ahead")
    await conn.execute(
        "UPDATE events_partitioning SET size = $1 WHERE size IS DISTINCT FROM $1", size
    )
    upto = await next_position(conn) + ahead * size
    top = await conn.fetchval("SELECT max(high) FROM events_partitions")
    if top is not None and top > upto:
        return []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.APPEND)
        upto = await next_position(conn) + ahead * size
        made = await conn.fetch("SELECT events_ensure_partitions($1) AS name", upto)
    return [r["name"] for r in made]


async def ensure_upto(conn: asyncpg.Connection, position: int) -> list[str]:
    """Make partitions (of the stored size) until ``position`` has one: for a bulk load that
    writes positions itself (COPY) instead of going through ``append_events``."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.APPEND)
        made = await conn.fetch("SELECT events_ensure_partitions($1) AS name", position)
    return [r["name"] for r in made]


async def set_dedup_floor(conn: asyncpg.Connection, window: float | None) -> int | None:
    """Store and return the lowest position append_events looks for a first copy at: the low
    bound of the oldest partition holding an event received within ``window`` seconds (None:
    every partition, also when ``window`` is None). sql/092; the append lock is held while
    the partitions' newest events are read (one index step each)."""
    floor: int | None = await conn.fetchval(
        "SELECT events_set_dedup_floor($1::float8 * interval '1 second')", window
    )
    return floor


async def dedup_floor(conn: asyncpg.Connection) -> int | None:
    """The floor :func:`set_dedup_floor` stored last (None: every partition is looked at)."""
    floor: int | None = await conn.fetchval("SELECT dedup_floor FROM events_partitioning")
    return floor


async def cover(conn: asyncpg.Connection, first: int, last: int) -> list[str]:
    """Make partitions so that every position from ``first`` to ``last`` has one: those above
    the newest partition as :func:`ensure_upto` makes them, and each range below or between
    partitions that retention dropped as one partition of its own (``events_r<low>``), so
    archived events can be restored with their positions. Returns the ones made."""
    made: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.APPEND)
        top = await conn.fetchval("SELECT max(high) FROM events_partitions")
        if top is None or last >= top:
            made += [
                r["name"]
                for r in await conn.fetch("SELECT events_ensure_partitions($1) AS name", last)
            ]
            top = await conn.fetchval("SELECT max(high) FROM events_partitions")
        # the gaps below ``top``: attached partitions are disjoint, ordered by their high bound
        bounds = await conn.fetch(
            "SELECT low, high FROM events_partitions WHERE detached_at IS NULL ORDER BY high"
        )
        cursor, end = first, min(last + 1, top)
        for b in bounds:
            if cursor >= end:
                break
            low = b["low"]
            if low is not None and cursor < low:  # [cursor, low) has no partition
                high = min(low, end)
                name = f"events_r{cursor}"
                held = await conn.fetchval(
                    "SELECT name FROM events_partitions WHERE detached_at IS NOT NULL"
                    " AND coalesce(low, $1) < $2 AND high > $1",
                    cursor,
                    high,
                )
                if held is not None:
                    raise PartitionInUse(
                        f"{held} is detached and not yet dropped: let retention finish it"
                        " before restoring its positions"
                    )
                await conn.execute("SELECT events_attach_partition($1, $2, $3)", name, cursor, high)
                made.append(name)
            cursor = max(cursor, b["high"])
        if cursor < end:  # below ``top`` with no partition above it: cannot happen
            raise AssertionError(f"positions {cursor}..{end - 1} have no partition")
    return made


async def detach_partition(
    conn: asyncpg.Connection, name: str, *, lock_timeout: float = 2.0
) -> None:
    """Detach log partition ``name`` (its rows leave the log; the table stays). Only a
    partition wholly below the next position; waits at most ``lock_timeout`` seconds for the
    log's lock (``asyncpg.LockNotAvailableError``: try again later)."""
    async with conn.transaction():
        await _retention(conn, lock_timeout)
        part = await _registered(conn, name)
        if part["detached_at"] is not None:
            return
        await _detach(conn, name, part["high"])


async def drop_partition(conn: asyncpg.Connection, name: str, *, lock_timeout: float = 2.0) -> None:
    """Drop log partition ``name`` (detached first if it is still attached); the same rules as
    :func:`detach_partition`."""
    async with conn.transaction():
        await _retention(conn, lock_timeout)
        part = await _registered(conn, name)
        if part["detached_at"] is None:
            await _detach(conn, name, part["high"])
        quoted = await conn.fetchval("SELECT quote_ident($1)", name)
        await conn.execute(f"DROP TABLE IF EXISTS {quoted}")
        await conn.execute("DELETE FROM events_partitions WHERE name = $1", name)


async def _retention(conn: asyncpg.Connection, lock_timeout: float) -> None:
    await conn.execute(
        "SELECT set_config('acklog.retention', 'on', true), set_config('lock_timeout', $1, true)",
        f"{int(lock_timeout * 1000)}ms",
    )


async def _registered(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    part = await conn.fetchrow(
        "SELECT high, detached_at FROM events_partitions WHERE name = $1 FOR UPDATE", name
    )
    if part is None:
        raise NotAPartition(f"{name!r} is not a partition of the log")
    return part


async def _detach(conn: asyncpg.Connection, name: str, high: int) -> None:
    nxt = await next_position(conn)
    if high > nxt:
        raise PartitionInUse(
            f"{name} ends at position {high - 1}, and the log's next position is {nxt}:"
            " it still takes events"
        )
    quoted = await conn.fetchval("SELECT quote_ident($1)", name)
    await conn.execute(f"ALTER TABLE events DETACH PARTITION {quoted}")
    await conn.execute("UPDATE events_partitions SET detached_at = now() WHERE name = $1", name)
