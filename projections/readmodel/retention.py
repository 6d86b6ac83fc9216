"""What retention needs of the read model (projections.retention): the oldest position a
message still inside an ack deadline began at, and the read model's own retention (messages,
their timelines and receipts, whose last activity is older than a cutoff)."""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

import asyncpg

from projections.readmodel import LIVE

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


WAITING_FLOOR_SQL = (
    f"SELECT min(first_position) FROM {LIVE}.messages"
    " WHERE (state = 'sending' AND sent_due_at IS NOT NULL AND NOT missed_sent)"
    " OR (state = 'sent' AND delivered_due_at IS NOT NULL AND NOT missed_delivered)"
)


async def waiting_floor(conn: Conn) -> int | None:
    """The smallest ``first_position`` of a message still waiting for an ack inside its
    deadline (``sending`` awaiting sent, ``sent`` awaiting delivered, not yet missed); None
    when no message waits. Its events stay in the log until the wait ends. One probe of
    the partial index sql/089 keeps on exactly this predicate (the two must stay equal)."""
    value = await conn.fetchval(WAITING_FLOOR_SQL)
    return int(value) if value is not None else None


async def forget_older_than(conn: asyncpg.Connection, cutoff: dt.datetime) -> int:
    """Delete the messages last active before ``cutoff`` with their timelines and receipts,
    in one transaction; how many messages."""
    async with conn.transaction():
        await conn.execute(
            f"CREATE TEMP TABLE acklog_forget ON COMMIT DROP AS"
            f" SELECT channel, key FROM {LIVE}.messages WHERE last_seen_at < $1",
            cutoff,
        )
        await conn.execute(
            f"DELETE FROM {LIVE}.timeline t USING acklog_forget f"
            " WHERE t.channel = f.channel AND t.key = f.key"
        )
        await conn.execute(
            f"DELETE FROM {LIVE}.receipts r USING acklog_forget f"
            " WHERE r.channel = f.channel AND r.key = f.key"
        )
        status = await conn.execute(
            f"DELETE FROM {LIVE}.messages m USING acklog_forget f"
            " WHERE m.channel = f.channel AND m.key = f.key"
        )
    return int(status.rsplit(" ", 1)[1])
