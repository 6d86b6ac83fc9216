"""Every PostgreSQL advisory-lock key acklog takes, in one place (Commanded's habit).

Keys are 64-bit integers in one namespace per database; each names what it serializes.
``APPEND`` is also written in ``sql/001_events.sql`` (the statement trigger takes it); a test
checks that the two agree.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

#: Transaction lock taken by the events table's BEFORE INSERT statement trigger: appends
#: draw positions one transaction at a time, so readers never skip an event (invariant 3).
APPEND = 7312004711
#: Session lock held while migrations run: one migrator at a time.
MIGRATE = 7312004712
#: Session lock of the live projector's leader: one projector at a time, standbys wait
#: (with one shard; shard k of n leads on :func:`projector_leader`).
PROJECTOR_LEADER = 7312004721
#: Transaction lock of live read-model writers: a projector batch with one shard and the
#: sweep take it exclusive, as does a rebuild's swap; shard projectors (n > 1) take it
#: shared, each with its own :func:`shard_write`, so shards fold side by side but never
#: while a swap or a sweep runs.
READ_MODEL_WRITE = 7312004722
#: Session lock: one rebuild or verify at a time.
REBUILD = 7312004723
#: Session lock of the feed's outbox projector leader (``projections.feed.outbox``).
FEED_OUTBOX = 7312004781
#: Session lock of the feed's delivery leader (``service.feed.delivery``): one sender.
FEED_DELIVERY = 7312004782
#: Transaction lock of an erasure (exclusive) against the feed's outbox batches and sweeps
#: (shared): no batch derived from a body before its redaction commits after the feed's scrub.
ERASURE = 7312004791
#: Session lock of whatever writes the archive store: a retention run
#: (``projections.retention``) and an erasure's rewrite of the archives
#: (``projections.erasure``): one at a time, the others wait. One lock for both, so an
#: archive a retention run writes from bodies read before an erasure masked them is
#: always seen by that erasure's pass, which waits for the run to finish.
RETENTION = 7312004792


def _per_shard(base: int, shard: int, shards: int) -> int:
    """A key of its own for shard ``shard`` of ``shards`` (n <= 64): ``base`` shifted left 16
    bits, then n and k in a byte each; far from every key above (those are below 2**33)."""
    if not 0 <= shard < shards <= 255:
        raise ValueError(f"no shard {shard} of {shards}")
    return (base << 16) | (shards << 8) | shard


def projector_leader(shard: int, shards: int) -> int:
    """Session lock of shard ``shard`` of ``shards``' leader (``PROJECTOR_LEADER`` when
    ``shards`` is 1: one projector leads on the key it always did)."""
    return PROJECTOR_LEADER if shards == 1 else _per_shard(PROJECTOR_LEADER, shard, shards)


def shard_write(shard: int, shards: int) -> int:
    """Transaction lock of shard ``shard`` of ``shards``' batches (with ``READ_MODEL_WRITE``
    shared): two projectors of one shard never fold the same batch side by side."""
    return _per_shard(READ_MODEL_WRITE, shard, shards)


async def holder(conn: asyncpg.Connection | asyncpg.Pool, key: int) -> Holder | None:
    """Who holds the session advisory lock ``key`` (its application name and since when)."""
    row = await conn.fetchrow(
        "SELECT a.pid, a.application_name, a.client_addr::text AS client, a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.classid = $1 AND l.objid = $2 AND l.database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())"
        " LIMIT 1",
        (key >> 32) & 0xFFFFFFFF,
        key & 0xFFFFFFFF,
    )
    if row is None:
        return None
    return Holder(
        pid=row["pid"],
        application_name=row["application_name"] or "",
        client=row["client"],
        since=row["backend_start"],
    )


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    application_name: str
    client: str | None
    since: dt.datetime | None
