"""The log's side of an erasure (docs/erasure.md): the audited path that may rewrite a body.

The ``events`` trigger (``sql/086_erasure.sql``) allows an UPDATE of ``body``, ``headers`` or
``dedup_key`` only in the transaction that created an ``erasures`` row and named it in the
setting ``acklog.erasure``; it records each position and the SHA-256 of the body that was
there. This module knows nothing about phone numbers: the caller passes ``mask``, a pure
function of bytes that returns its argument unchanged when there is nothing to erase.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import asyncpg
import msgspec

__all__ = [
    "Audit",
    "Changed",
    "archived",
    "begin",
    "find",
    "finish",
    "get",
    "pending",
    "rebuilt",
    "redact",
]

Mask = Callable[[bytes], bytes]

#: events per page of a scan
PAGE = 1000

_SELECT = (
    "SELECT position, channel, provider, headers::text AS headers, body, dedup_key FROM events"
)


class Audit(msgspec.Struct, frozen=True, kw_only=True):
    """An erasure as recorded: no personal data, only where and what it changed."""

    id: int
    requested_at: dt.datetime
    requested_by: str
    events: int
    feed_events: int
    feed_rows: int
    positions: list[int]
    #: hex SHA-256 of each changed event's body before the erasure, in position order
    body_sha256: list[str]
    rebuilt_at: dt.datetime | None
    rebuilt_to: int | None
    #: archives read (None: not done: no archive store, or it failed), and rewritten
    archives_scanned: int | None = None
    archives_rewritten: int = 0
    #: the archive store failed: archives may still hold the number until a rerun
    archives_pending: bool = False


def _touched(row: asyncpg.Record, mask: Mask) -> bool:
    return bool(
        mask(row["body"]) != row["body"]
        or mask(row["headers"].encode()) != row["headers"].encode()
        or mask(row["dedup_key"].encode()) != row["dedup_key"].encode()
    )


async def find(conn: asyncpg.Connection, mask: Mask, *, after: int = 0) -> tuple[list[int], int]:
    """Positions after ``after`` whose body, headers or dedup key ``mask`` changes, and the
    last position scanned (events are visible in position order: invariant 3)."""
    found: list[int] = []
    last = after
    while True:
        rows = await conn.fetch(
            f"{_SELECT} WHERE position > $1 ORDER BY position LIMIT $2", last, PAGE
        )
        if not rows:
            return found, last
        found += [r["position"] for r in rows if _touched(r, mask)]
        last = rows[-1]["position"]


async def begin(conn: asyncpg.Connection, requested_by: str) -> int:
    """Open an erasure in the caller's transaction; the log may change in its name until
    that transaction ends."""
    erasure = int(
        await conn.fetchval(
            "INSERT INTO erasures (requested_by) VALUES ($1) RETURNING id", requested_by
        )
    )
    await conn.execute("SELECT set_config('acklog.erasure', $1, true)", str(erasure))
    return erasure


class Changed(msgspec.Struct, frozen=True):
    position: int
    channel: str
    provider: str


async def redact(conn: asyncpg.Connection, mask: Mask, positions: list[int]) -> list[Changed]:
    """Mask these events (inside :func:`begin`'s transaction); returns those it changed."""
    changed: list[Changed] = []
    for start in range(0, len(positions), PAGE):
        rows = await conn.fetch(
            f"{_SELECT} WHERE position = ANY($1::bigint[]) ORDER BY position FOR UPDATE",
            positions[start : start + PAGE],
        )
        updates = [
            (
                r["position"],
                mask(r["body"]),
                mask(r["headers"].encode()).decode(),
                mask(r["dedup_key"].encode()).decode(),
            )
            for r in rows
            if _touched(r, mask)
        ]
        if updates:
            await conn.executemany(
                "UPDATE events SET body = $2, headers = $3::text::jsonb, dedup_key = $4"
                " WHERE position = $1",
                updates,
            )
            masked = {u[0] for u in updates}
            changed += [
                Changed(r["position"], r["channel"], r["provider"])
                for r in rows
                if r["position"] in masked
            ]
    return changed


async def finish(
    conn: asyncpg.Connection, erasure: int, *, events: int, feed_events: int, feed_rows: int
) -> None:
    await conn.execute(
        "UPDATE erasures SET events = $2, feed_events = $3, feed_rows = $4 WHERE id = $1",
        erasure,
        events,
        feed_events,
        feed_rows,
    )


async def rebuilt(conn: asyncpg.Connection, erasure: int, position: int) -> None:
    """Record that the read models were rebuilt from the redacted log up to ``position``."""
    await conn.execute(
        "UPDATE erasures SET rebuilt_at = now(), rebuilt_to = $2 WHERE id = $1", erasure, position
    )


async def archived(
    conn: asyncpg.Connection, erasure: int, *, scanned: int | None, rewritten: int, pending: bool
) -> None:
    """Record the erasure's pass over the archive store (counts only)."""
    await conn.execute(
        "UPDATE erasures SET archives_scanned = $2, archives_rewritten = $3,"
        " archives_pending = $4 WHERE id = $1",
        erasure,
        scanned,
        rewritten,
        pending,
    )


async def pending(conn: asyncpg.Connection) -> list[int]:
    """Erasures that changed the log or an archive (what retention dropped from the log is
    folded from the archives) and whose read-model rebuild has not finished."""
    rows = await conn.fetch(
        "SELECT id FROM erasures WHERE (events > 0 OR archives_rewritten > 0)"
        " AND rebuilt_at IS NULL ORDER BY id"
    )
    return [r["id"] for r in rows]


async def get(conn: asyncpg.Connection | asyncpg.Pool, erasure: int) -> Audit | None:
    row = await conn.fetchrow(
        "SELECT e.id, e.requested_at, e.requested_by, e.events, e.feed_events, e.feed_rows,"
        " e.rebuilt_at, e.rebuilt_to, e.archives_scanned, e.archives_rewritten,"
        " e.archives_pending, coalesce(array_agg(x.position ORDER BY x.position)"
        " FILTER (WHERE x.position IS NOT NULL), '{}') AS positions,"
        " coalesce(array_agg(encode(x.body_sha256, 'hex') ORDER BY x.position)"
        " FILTER (WHERE x.position IS NOT NULL), '{}') AS hashes"
        " FROM erasures e LEFT JOIN erasure_events x ON x.erasure_id = e.id"
        " WHERE e.id = $1 GROUP BY e.id",
        erasure,
    )
    if row is None:
        return None
    return Audit(
        id=row["id"],
        requested_at=row["requested_at"],
        requested_by=row["requested_by"],
        events=row["events"],
        feed_events=row["feed_events"],
        feed_rows=row["feed_rows"],
        positions=list(row["positions"]),
        body_sha256=list(row["hashes"]),
        rebuilt_at=row["rebuilt_at"],
        rebuilt_to=row["rebuilt_to"],
        archives_scanned=row["archives_scanned"],
        archives_rewritten=row["archives_rewritten"],
        archives_pending=row["archives_pending"],
    )
