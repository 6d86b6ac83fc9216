"""Subscriptions to the feed and their delivery bookkeeping: every ``feed.subscriptions``,
``feed.secrets``, ``feed.attempts``, ``feed.dead_letters`` and ``feed.replays`` statement.

A subscription's ``cursor`` is the last feed seq it has handled (delivered or dead-lettered):
its backlog is every matching event after it, so the outbox's transaction that writes an
event is also the one that owes it to every subscription (nothing to lose or invent).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets as _secrets

import asyncpg
import msgspec

from projections.feed import events as fe
from projections.feed.store import FEED_CHANNEL


class SubscriptionError(Exception):
    """An operator mistake (unknown name, taken name, bad filter): a clear message."""


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    url: str
    channels: list[str]
    events: list[str]
    status: str
    paused_reason: str | None
    cursor: int
    failures: int
    created_at: dt.datetime


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    attempt: int
    outcome: str
    status_code: int | None
    error: str | None
    seconds: float
    at: dt.datetime


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    subscription: str
    seq: int
    event_id: str
    type: str
    attempts: int
    error: str
    dead_at: dt.datetime
    replayed_at: dt.datetime | None


_COLUMNS = "id, name, url, channels, events, status, paused_reason, cursor, failures, created_at"


def _sub(r: asyncpg.Record) -> Subscription:
    return Subscription(**{k: r[k] for k in r.keys()})


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()


def _check_events(events: list[str]) -> None:
    unknown = sorted(set(events) - set(fe.EVENT_TYPES))
    if unknown:
        raise SubscriptionError(
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(fe.EVENT_TYPES)}"
        )


async def add(
    conn: asyncpg.Connection,
    name: str,
    url: str,
    *,
    channels: list[str] | None = None,
    events: list[str] | None = None,
    from_start: bool = False,
) -> tuple[Subscription, str]:
    """A new subscription and its first secret (shown once). It starts at the feed's end
    unless ``from_start``."""
    _check_events(events or [])
    async with conn.transaction():
        cursor = (
            0
            if from_start
            else await conn.fetchval("SELECT coalesce(max(seq), 0) FROM feed.events")
        )
        try:
            row = await conn.fetchrow(
                "INSERT INTO feed.subscriptions (name, url, channels, events, cursor)"
                f" VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
                name,
                url,
                channels or [],
                events or [],
                cursor,
            )
        except asyncpg.UniqueViolationError:
            raise SubscriptionError(f"a subscription named {name!r} exists") from None
        secret = new_secret()
        await conn.execute(
            "INSERT INTO feed.secrets (subscription_id, secret) VALUES ($1, $2)", row["id"], secret
        )
    return _sub(row), secret


async def list_all(conn: asyncpg.Connection | asyncpg.Pool) -> list[Subscription]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM feed.subscriptions ORDER BY name")
    return [_sub(r) for r in rows]


async def by_id(conn: asyncpg.Connection | asyncpg.Pool, sub_id: int) -> Subscription | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM feed.subscriptions WHERE id = $1", sub_id)
    return _sub(row) if row else None


async def get(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> Subscription:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM feed.subscriptions WHERE name = $1", name)
    if row is None:
        raise SubscriptionError(f"no subscription named {name!r}")
    return _sub(row)


async def update(
    conn: asyncpg.Connection,
    name: str,
    *,
    url: str | None = None,
    channels: list[str] | None = None,
    events: list[str] | None = None,
) -> Subscription:
    _check_events(events or [])
    row = await conn.fetchrow(
        "UPDATE feed.subscriptions SET url = coalesce($2, url),"
        " channels = coalesce($3, channels), events = coalesce($4, events), updated_at = now()"
        f" WHERE name = $1 RETURNING {_COLUMNS}",
        name,
        url,
        channels,
        events,
    )
    if row is None:
        raise SubscriptionError(f"no subscription named {name!r}")
    return _sub(row)


async def set_status(
    conn: asyncpg.Connection | asyncpg.Pool, name: str, status: str, reason: str | None = None
) -> Subscription:
    """Pause (with a reason) or resume (the circuit closes: failures back to 0)."""
    row = await conn.fetchrow(
        "UPDATE feed.subscriptions SET status = $2, paused_reason = $3,"
        " failures = CASE WHEN $2 = 'active' THEN 0 ELSE failures END, updated_at = now()"
        f" WHERE name = $1 RETURNING {_COLUMNS}",
        name,
        status,
        reason,
    )
    if row is None:
        raise SubscriptionError(f"no subscription named {name!r}")
    await conn.execute("SELECT pg_notify($1, '')", FEED_CHANNEL)
    return _sub(row)


async def remove(conn: asyncpg.Connection, name: str) -> None:
    status = await conn.execute("DELETE FROM feed.subscriptions WHERE name = $1", name)
    if status != "DELETE 1":
        raise SubscriptionError(f"no subscription named {name!r}")


async def rotate_secret(conn: asyncpg.Connection, name: str, overlap: dt.timedelta) -> str:
    """A new secret; the current ones keep signing for ``overlap``, then expire."""
    sub = await get(conn, name)
    secret = new_secret()
    async with conn.transaction():
        await conn.execute(
            "UPDATE feed.secrets SET expires_at = now() + $2::interval"
            " WHERE subscription_id = $1 AND (expires_at IS NULL OR expires_at > now() + $2::interval)",
            sub.id,
            overlap,
        )
        await conn.execute(
            "INSERT INTO feed.secrets (subscription_id, secret) VALUES ($1, $2)", sub.id, secret
        )
    return secret


async def signing_secrets(conn: asyncpg.Connection | asyncpg.Pool, sub_id: int) -> list[str]:
    """The secrets that sign now, newest first (each gives one ``webhook-signature`` entry)."""
    rows = await conn.fetch(
        "SELECT secret FROM feed.secrets WHERE subscription_id = $1"
        " AND (expires_at IS NULL OR expires_at > now()) ORDER BY id DESC",
        sub_id,
    )
    return [r["secret"] for r in rows]


# --- delivery bookkeeping -----------------------------------------------------------------


async def next_replay(conn: asyncpg.Connection | asyncpg.Pool, sub_id: int) -> int | None:
    value = await conn.fetchval(
        "SELECT seq FROM feed.replays WHERE subscription_id = $1 ORDER BY seq LIMIT 1", sub_id
    )
    return int(value) if value is not None else None


async def replayed(conn: asyncpg.Connection | asyncpg.Pool, sub_id: int, seq: int) -> None:
    await conn.execute(
        "DELETE FROM feed.replays WHERE subscription_id = $1 AND seq = $2", sub_id, seq
    )


async def record_attempt(
    conn: asyncpg.Connection | asyncpg.Pool,
    sub_id: int,
    seq: int,
    attempt: int,
    outcome: str,
    status_code: int | None,
    error: str | None,
    seconds: float,
) -> None:
    await conn.execute(
        "INSERT INTO feed.attempts (subscription_id, seq, attempt, outcome, status_code, error,"
        " seconds) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        sub_id,
        seq,
        attempt,
        outcome,
        status_code,
        error,
        seconds,
    )


async def delivered(
    conn: asyncpg.Connection | asyncpg.Pool,
    sub_id: int,
    seq: int,
    attempt: int,
    status_code: int | None,
    seconds: float,
    replay: bool,
) -> None:
    """A 2xx: the attempt on record, and the cursor moved (or the replay done), at once; a
    delivery closes the circuit's count of failures."""
    await conn.execute(
        "WITH attempt AS (INSERT INTO feed.attempts (subscription_id, seq, attempt, outcome,"
        " status_code, seconds) VALUES ($1, $2, $3, 'delivered', $4, $5)),"
        " replay AS (DELETE FROM feed.replays WHERE $6 AND subscription_id = $1 AND seq = $2)"
        " UPDATE feed.subscriptions SET failures = 0,"
        " cursor = CASE WHEN $6 THEN cursor ELSE greatest(cursor, $2) END WHERE id = $1",
        sub_id,
        seq,
        attempt,
        status_code,
        seconds,
        replay,
    )


async def delivered_batch(
    conn: asyncpg.Connection | asyncpg.Pool,
    sub_id: int,
    seqs: list[int],
    status_codes: list[int],
    seconds: list[float],
) -> None:
    """First attempts answered 2xx, in feed order: their attempts on record and the cursor
    moved past the last, in one statement (one write per page, not per delivery)."""
    await conn.execute(
        "WITH attempt AS (INSERT INTO feed.attempts (subscription_id, seq, attempt, outcome,"
        " status_code, seconds) SELECT $1, u.seq, 1, 'delivered', u.code, u.seconds"
        " FROM unnest($2::bigint[], $3::integer[], $4::float8[]) AS u(seq, code, seconds))"
        " UPDATE feed.subscriptions SET failures = 0, cursor = greatest(cursor, $5)"
        " WHERE id = $1",
        sub_id,
        seqs,
        status_codes,
        seconds,
        max(seqs),
    )


async def dead_letter(
    conn: asyncpg.Connection, sub_id: int, seq: int, attempts: int, error: str, *, breaker: int
) -> bool:
    """Record a dead letter and move past it; pause the subscription (circuit open) after
    ``breaker`` dead letters in a row, its backlog kept. Returns whether it paused."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO feed.dead_letters (subscription_id, seq, attempts, error)"
            " VALUES ($1, $2, $3, $4)",
            sub_id,
            seq,
            attempts,
            error[:500],
        )
        await conn.execute(
            "DELETE FROM feed.replays WHERE subscription_id = $1 AND seq = $2", sub_id, seq
        )
        failures = await conn.fetchval(
            "UPDATE feed.subscriptions SET cursor = greatest(cursor, $2), failures = failures + 1"
            " WHERE id = $1 RETURNING failures",
            sub_id,
            seq,
        )
        if failures is not None and failures >= breaker:
            await conn.execute(
                "UPDATE feed.subscriptions SET status = 'paused', paused_reason = $2,"
                " updated_at = now() WHERE id = $1",
                sub_id,
                f"circuit open: {failures} events in a row dead-lettered; last: {error[:200]}",
            )
            return True
    return False


async def prune_attempts(
    conn: asyncpg.Connection | asyncpg.Pool, sub_id: int, *, keep: int, limit: int = 10_000
) -> int:
    """Forget all but the ``keep`` latest delivery attempts of a subscription (at most
    ``limit`` rows per call, so no call holds a long transaction); how many went. Every
    delivery leaves an attempt row, so without this the table grows with the feed forever;
    dead letters keep their own rows (``feed.dead_letters``) and are not touched."""
    if keep < 1:
        raise ValueError("keep at least one attempt")
    gone = await conn.fetchval(
        "WITH cutoff AS (SELECT id FROM feed.attempts WHERE subscription_id = $1"
        "  ORDER BY id DESC OFFSET $2 - 1 LIMIT 1),"
        " doomed AS (SELECT a.id FROM feed.attempts a, cutoff"
        "  WHERE a.subscription_id = $1 AND a.id < cutoff.id ORDER BY a.id LIMIT $3),"
        " deleted AS (DELETE FROM feed.attempts WHERE id IN (SELECT id FROM doomed) RETURNING 1)"
        " SELECT count(*) FROM deleted",
        sub_id,
        keep,
        limit,
    )
    return int(gone)


async def recent_attempts(
    conn: asyncpg.Connection | asyncpg.Pool, sub_id: int, limit: int = 20
) -> list[Attempt]:
    rows = await conn.fetch(
        "SELECT seq, attempt, outcome, status_code, error, seconds, at FROM feed.attempts"
        " WHERE subscription_id = $1 ORDER BY id DESC LIMIT $2",
        sub_id,
        limit,
    )
    return [Attempt(**dict(r)) for r in rows]


async def dead_letters(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    subscription: str | None = None,
    include_replayed: bool = False,
    limit: int = 100,
    after_id: int = 0,
) -> list[DeadLetter]:
    rows = await conn.fetch(
        "SELECT d.id, s.name AS subscription, d.seq, e.id::text AS event_id, e.type,"
        " d.attempts, d.error, d.dead_at, d.replayed_at"
        " FROM feed.dead_letters d JOIN feed.subscriptions s ON s.id = d.subscription_id"
        " JOIN feed.events e ON e.seq = d.seq"
        " WHERE ($1::text IS NULL OR s.name = $1) AND ($2 OR d.replayed_at IS NULL)"
        " AND d.id > $4 ORDER BY d.id LIMIT $3",
        subscription,
        include_replayed,
        limit,
        after_id,
    )
    return [DeadLetter(**dict(r)) for r in rows]


async def replay(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    subscription: str | None = None,
    event_id: str | None = None,
    seq_from: int | None = None,
    seq_to: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> int:
    """Queue the (not yet replayed) dead letters that match for sending again, marking them
    replayed; returns how many. Every filter given must hold."""
    rows = await conn.fetch(
        "WITH picked AS ("
        " UPDATE feed.dead_letters d SET replayed_at = now()"
        " FROM feed.subscriptions s, feed.events e"
        " WHERE s.id = d.subscription_id AND e.seq = d.seq AND d.replayed_at IS NULL"
        " AND ($1::text IS NULL OR s.name = $1) AND ($2::uuid IS NULL OR e.id = $2::uuid)"
        " AND ($3::bigint IS NULL OR d.seq >= $3) AND ($4::bigint IS NULL OR d.seq <= $4)"
        " AND ($5::timestamptz IS NULL OR d.dead_at >= $5)"
        " AND ($6::timestamptz IS NULL OR d.dead_at <= $6)"
        " RETURNING d.subscription_id, d.seq)"
        " INSERT INTO feed.replays (subscription_id, seq) SELECT subscription_id, seq FROM picked"
        " ON CONFLICT DO NOTHING RETURNING seq",
        subscription,
        event_id,
        seq_from,
        seq_to,
        since,
        until,
    )
    await conn.execute("SELECT pg_notify($1, '')", FEED_CHANNEL)
    return len(rows)


async def rewind(conn: asyncpg.Connection | asyncpg.Pool, name: str, cursor: int) -> Subscription:
    """Redeliver history: the subscription's cursor goes back to ``cursor`` (a feed seq)."""
    row = await conn.fetchrow(
        f"UPDATE feed.subscriptions SET cursor = $2, updated_at = now() WHERE name = $1"
        f" RETURNING {_COLUMNS}",
        name,
        cursor,
    )
    if row is None:
        raise SubscriptionError(f"no subscription named {name!r}")
    await conn.execute("SELECT pg_notify($1, '')", FEED_CHANNEL)
    return _sub(row)


class Backlog(msgspec.Struct, frozen=True):
    pending: int
    oldest: dt.datetime | None


async def backlog(conn: asyncpg.Connection | asyncpg.Pool, sub: Subscription) -> Backlog:
    """Events the subscription still owes (after its cursor, matching its filters)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(created_at) AS oldest FROM feed.events WHERE seq > $1"
        " AND (cardinality($2::text[]) = 0 OR channel = ANY($2::text[]))"
        " AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[]))",
        sub.cursor,
        sub.channels,
        sub.events,
    )
    pending = await conn.fetchval(
        "SELECT count(*) FROM feed.replays WHERE subscription_id = $1", sub.id
    )
    return Backlog(int(row["n"]) + int(pending), row["oldest"])
