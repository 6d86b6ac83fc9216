"""Gap-safe reads of the log.

Appends are serialized by a transaction-level lock taken before any position is drawn (see
``sql/001_events.sql``), so positions become visible in order: reading ``position > after``
never skips an event that commits later (invariant 3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg
import msgspec

from eventstore.events import StoredEvent

_COLUMNS = (
    "position, received_at, channel, provider, content_type, headers, body, dedup_key, duplicate_of"
)
#: what a fold reads: of the headers only ``content-encoding`` (decoders need nothing else),
#: and no dedup key; on 1M events this took ~1 µs per event off PostgreSQL (jsonb sent as
#: text) and ~2 µs off the client (parsing it back)
_FOLD_COLUMNS = (
    "position, received_at, channel, provider, content_type,"
    " CASE WHEN headers ? 'content-encoding'"
    " THEN jsonb_build_object('content-encoding', headers->'content-encoding') END AS headers,"
    " body, '' AS dedup_key, duplicate_of"
)


def _event(row: asyncpg.Record, body: bytes | None = None) -> StoredEvent:
    """The stored event of ``row``; ``body`` replaces the row's (a listing that left it out)."""
    return StoredEvent(
        position=row["position"],
        received_at=row["received_at"],
        channel=row["channel"],
        provider=row["provider"],
        content_type=row["content_type"],
        headers=row["headers"] or {},
        body=row["body"] if body is None else body,
        dedup_key=row["dedup_key"],
        duplicate_of=row["duplicate_of"],
    )


async def read(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    after: int = 0,
    limit: int = 1000,
    channel: str | None = None,
    upto: int | None = None,
    channels: Sequence[str] | None = None,
    for_fold: bool = False,
) -> list[StoredEvent]:
    """Events with ``after < position [<= upto]``, in position order; ``for_fold``: only
    what a fold uses (headers cut to ``content-encoding``, an empty ``dedup_key``).

    The SQL differs with and without a channel so each form keeps its index under a
    generic plan: ``(channel, position)`` for one channel, the primary key for all (and
    for ``channels``, a set of them: a rebuild shard's).
    """
    where = "position > $1 AND position <= $3"
    args: list[object] = [after, limit, upto if upto is not None else 2**63 - 1]
    if channel is not None:
        where += " AND channel = $4"
        args.append(channel)
    elif channels is not None:
        where += " AND channel = ANY($4::text[])"
        args.append(list(channels))
    columns = _FOLD_COLUMNS if for_fold else _COLUMNS
    rows = await conn.fetch(
        f"SELECT {columns} FROM events WHERE {where} ORDER BY position LIMIT $2", *args
    )
    return [_event(r) for r in rows]


async def read_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    after: int = 0,
    limit: int = 100,
    max_bytes: int = 1024 * 1024,
    channel: str | None = None,
) -> tuple[list[StoredEvent], bool]:
    """A page of at most ``limit`` events and ``max_bytes`` of bodies (but at least one event),
    and whether more follow. Sizes come from ``octet_length`` (the TOAST header: no body is
    read that is not returned), so a page of huge bodies costs only what it answers."""
    where = "position > $1"
    args: list[object] = [after, limit + 1, max_bytes]
    if channel is not None:
        where += " AND channel = $4"
        args.append(channel)
    rows = await conn.fetch(
        f"""WITH page AS (
                SELECT position, octet_length(body) AS n FROM events
                WHERE {where} ORDER BY position LIMIT $2
            ), sized AS (
                SELECT position, sum(n) OVER (ORDER BY position) AS upto,
                       row_number() OVER (ORDER BY position) AS k, count(*) OVER () AS total
                FROM page
            )
            SELECT {_COLUMNS}, total FROM events JOIN sized USING (position)
            WHERE k < $2 AND (k = 1 OR upto <= $3)
            ORDER BY position""",
        *args,
    )
    more = bool(rows) and rows[0]["total"] > len(rows)
    return [_event(r) for r in rows], more


async def get(conn: asyncpg.Connection | asyncpg.Pool, position: int) -> StoredEvent | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM events WHERE position = $1", position)
    return _event(row) if row else None


async def channel_counts(conn: asyncpg.Connection, upto: int) -> dict[str, int]:
    """Events per channel up to ``upto`` (a full scan: for splitting a rebuild in shards)."""
    rows = await conn.fetch(
        "SELECT channel, count(*) AS n FROM events WHERE position <= $1 GROUP BY channel", upto
    )
    return {r["channel"]: int(r["n"]) for r in rows}


async def head(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The highest committed position (0 for an empty log)."""
    value = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
    return int(value)


#: a filter no index serves (provider, duplicate) looks at most this many positions per page
SCAN_WINDOW = 20_000
#: lists of events carry bodies up to this size (larger ones are read one at a time)
LISTED_BODY_BYTES = 64 * 1024


class Listed(msgspec.Struct, frozen=True, kw_only=True):
    """An event in a list: ``event.body`` is empty when ``cut`` (``size`` bytes not read)."""

    event: StoredEvent
    size: int
    cut: bool


def _listed_sql(where: str, order: str) -> str:
    """Bodies over ``$3`` bytes are not read: ``octet_length`` comes from the TOAST header."""
    cols = _COLUMNS.replace("body,", "CASE WHEN octet_length(body) <= $3 THEN body END AS body,")
    return (
        f"SELECT {cols}, octet_length(body) AS size FROM events WHERE {where}"
        f" ORDER BY position {order} LIMIT $2"
    )


def _listed(row: asyncpg.Record) -> Listed:
    cut = row["body"] is None
    event = _event(row, b"" if cut else None)
    return Listed(event=event, size=row["size"], cut=cut)


async def newest(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    before: int,
    limit: int,
    channel: str | None = None,
    provider: str | None = None,
    duplicate: bool | None = None,
    window: int = SCAN_WINDOW,
) -> tuple[list[Listed], int | None]:
    """Newest first, below ``before``: (events, where the next page starts or None).

    One channel walks ``(channel, position)``, all channels the primary key, backwards. The
    provider and duplicate filters have no index, so they look at ``window`` positions at
    most: a page may come back short, and the next page continues below the window.
    """
    args: list[object] = [before, limit, LISTED_BODY_BYTES]
    where = ["position < $1"]
    if channel is not None:
        args.append(channel)
        where.append(f"channel = ${len(args)}")
    windowed = provider is not None or duplicate is not None
    if windowed:
        args.append(before - window)
        where.append(f"position >= ${len(args)}")
    if provider is not None:
        args.append(provider)
        where.append(f"provider = ${len(args)}")
    if duplicate is not None:
        where.append("duplicate_of IS NOT NULL" if duplicate else "duplicate_of IS NULL")
    rows = await conn.fetch(_listed_sql(" AND ".join(where), "DESC"), *args)
    events = [_listed(r) for r in rows]
    if len(events) == limit:
        return events, events[-1].event.position
    if windowed and before - window > 1:
        return events, before - window
    return events, None


async def newer(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    after: int,
    limit: int,
    channel: str | None = None,
) -> list[Listed]:
    """Events after ``after`` in log order (a live view's next rows), bodies bounded."""
    args: list[object] = [after, limit, LISTED_BODY_BYTES]
    where = "position > $1"
    if channel is not None:
        args.append(channel)
        where += " AND channel = $4"
    return [_listed(r) for r in await conn.fetch(_listed_sql(where, "ASC"), *args)]


async def get_many(conn: asyncpg.Connection | asyncpg.Pool, positions: list[int]) -> list[Listed]:
    """The events at these positions (primary-key probes), newest first, bodies bounded."""
    rows = await conn.fetch(
        _listed_sql("position = ANY($1::bigint[])", "DESC"),
        positions,
        len(positions),
        LISTED_BODY_BYTES,
    )
    return [_listed(r) for r in rows]


async def latest_by_channel(
    conn: asyncpg.Connection | asyncpg.Pool, channels: list[str]
) -> dict[str, tuple[int, dt.datetime]]:
    """(position, received_at) of each channel's newest event: one index probe per channel."""
    rows = await conn.fetch(
        "SELECT c.name, e.position, e.received_at FROM unnest($1::text[]) AS c(name)"
        " CROSS JOIN LATERAL (SELECT position, received_at FROM events"
        " WHERE channel = c.name ORDER BY position DESC LIMIT 1) AS e",
        channels,
    )
    return {r["name"]: (r["position"], r["received_at"]) for r in rows}


async def oldest_after(
    conn: asyncpg.Connection | asyncpg.Pool, position: int
) -> dt.datetime | None:
    """When the first event after ``position`` was received (None: nothing after it)."""
    value: dt.datetime | None = await conn.fetchval(
        "SELECT received_at FROM events WHERE position > $1 ORDER BY position LIMIT 1", position
    )
    return value


#: Distinct channels of the log without reading it: one index probe per channel.
LOG_CHANNELS_SQL = """
WITH RECURSIVE ch(name) AS (
    (SELECT channel FROM events ORDER BY channel LIMIT 1)
    UNION ALL
    SELECT (SELECT e.channel FROM events e WHERE e.channel > ch.name ORDER BY e.channel LIMIT 1)
    FROM ch WHERE ch.name IS NOT NULL
)
SELECT ch.name,
       (SELECT e.provider FROM events e WHERE e.channel = ch.name
        ORDER BY e.position DESC LIMIT 1) AS provider
FROM ch WHERE ch.name IS NOT NULL
"""
#: The provider of a channel's newest event.
CHANNEL_PROVIDER_SQL = (
    "SELECT provider FROM events WHERE channel = $1 ORDER BY position DESC LIMIT 1"
)


async def channels(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, str]:
    """Every channel of the log → the provider of its newest event (a skip scan)."""
    return {r["name"]: r["provider"] for r in await conn.fetch(LOG_CHANNELS_SQL)}


async def channel_provider(conn: asyncpg.Connection | asyncpg.Pool, channel: str) -> str | None:
    value = await conn.fetchval(CHANNEL_PROVIDER_SQL, channel)
    return str(value) if value is not None else None


async def first_at_or_after(conn: asyncpg.Connection | asyncpg.Pool, when: dt.datetime) -> int:
    """The first position received at or after ``when`` (head + 1 when none is).

    ``received_at`` follows position closely but not strictly (commit order is not position
    order), so this is a binary search over the primary key: O(log n) index lookups, no scan
    and no index on ``received_at`` needed; an event a few milliseconds out of order at the
    boundary may be included or not.
    """
    lo, hi = 1, await head(conn) + 1
    while lo < hi:
        mid = (lo + hi) // 2
        at = await conn.fetchval(
            "SELECT received_at FROM events WHERE position >= $1 ORDER BY position LIMIT 1", mid
        )
        if at is None or at >= when:
            hi = mid
        else:
            lo = mid + 1
    return lo
