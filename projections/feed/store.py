"""The outbox projector's SQL on ``feed.*`` (the feed's own state, and the feed itself).

Subscriptions, attempts, dead letters and replays are in :mod:`.subscriptions`; nothing
outside ``projections/feed`` writes SQL on ``feed.*`` (a grep test keeps it that way).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import asyncpg
import msgspec

from projections.feed import events as fe
from projections.feed.derive import Instance, Key
from projections.rules.deadlines import MISSED_FIELDS, WAITS, MissedAcks, Stage
from projections.rules.message_state import MessageState

#: NOTIFY channel: the feed has new events (a wake-up only, like acklog_events)
FEED_CHANNEL = "acklog_feed"

_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(MessageState)


async def load_messages(
    conn: asyncpg.Connection, keys: Iterable[Key]
) -> tuple[dict[Key, MessageState], dict[Key, MissedAcks]]:
    keys = list(keys)
    if not keys:
        return {}, {}
    rows = await conn.fetch(
        f"SELECT m.channel, m.key, m.doc, {', '.join('m.' + f for f in MISSED_FIELDS)}"
        " FROM feed.messages m JOIN unnest($1::text[], $2::text[]) AS k(channel, key)"
        " ON m.channel = k.channel AND m.key = k.key",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    states: dict[Key, MessageState] = {}
    missed: dict[Key, MissedAcks] = {}
    for r in rows:
        k = (r["channel"], r["key"])
        states[k] = _state_decoder.decode(r["doc"])
        missed[k] = MissedAcks(**{f: r[f] for f in MISSED_FIELDS})
    return states, missed


async def load_instances(conn: asyncpg.Connection, channels: Iterable[str]) -> dict[str, Instance]:
    rows = await conn.fetch(
        "SELECT channel, status, raw, position FROM feed.instances WHERE channel = ANY($1::text[])",
        list(set(channels)),
    )
    return {r["channel"]: Instance(r["status"], r["raw"], r["position"]) for r in rows}


async def last_seq(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM feed.events"))


async def write(
    conn: asyncpg.Connection,
    events: list[fe.FeedEvent],
    messages: Mapping[Key, MessageState],
    missed: Mapping[Key, MissedAcks],
    instances: Mapping[str, Instance],
) -> int:
    """Store a batch's events (numbered after the feed's last seq) and the feed's rows;
    returns the last seq. An id already in the feed (a rebuild's replay) is kept as it was."""
    seq = await last_seq(conn)
    records = []
    for event in events:
        seq += 1
        numbered = msgspec.structs.replace(event, seq=seq)
        records.append(
            (
                seq,
                event.id,
                type_of(event),
                event.channel,
                max(event.positions),
                fe.encode(numbered),
            )
        )
    if records:
        columns = list(zip(*records, strict=True))
        # ids already in the feed are left out by a lookup, not ON CONFLICT: a speculative
        # insertion writes a second WAL record per row, and only this leader writes here
        await conn.execute(
            "INSERT INTO feed.events (seq, id, type, channel, position, body)"
            " SELECT u.* FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[],"
            " $5::bigint[], $6::bytea[]) AS u(seq, id, type, channel, position, body)"
            " WHERE NOT EXISTS (SELECT 1 FROM feed.events e WHERE e.id = u.id)",
            *columns,
        )
        await conn.execute("SELECT pg_notify($1, '')", FEED_CHANNEL)
    if messages:
        rows = [
            (k[0], k[1], m.state, _state_encoder.encode(m), *msgspec.structs.astuple(missed[k]))
            for k, m in messages.items()
        ]
        await conn.execute(
            f"INSERT INTO feed.messages (channel, key, state, doc, {', '.join(MISSED_FIELDS)})"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[],"
            " $5::timestamptz[], $6::timestamptz[], $7::boolean[], $8::timestamptz[],"
            " $9::timestamptz[], $10::boolean[])"
            " ON CONFLICT (channel, key) DO UPDATE SET state = excluded.state,"
            " doc = excluded.doc, " + ", ".join(f"{f} = excluded.{f}" for f in MISSED_FIELDS),
            *zip(*rows, strict=True),
        )
    if instances:
        await conn.executemany(
            "INSERT INTO feed.instances (channel, status, raw, position) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (channel) DO UPDATE SET status = excluded.status, raw = excluded.raw,"
            " position = excluded.position",
            [(c, i.status, i.raw, i.position) for c, i in instances.items()],
        )
    return seq


def type_of(event: fe.FeedEvent) -> str:
    """The event's ``type`` (its Struct tag), read from the class's config: msgspec.inspect
    rebuilt the class's type info on every call and cost ~0.6 ms per event."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


async def overdue(
    conn: asyncpg.Connection, stage: Stage, now: dt.datetime, limit: int
) -> list[tuple[MessageState, dt.datetime]]:
    """Messages still waiting for ``stage`` past its deadline, not yet reported missed."""
    wait = WAITS[stage]
    rows = await conn.fetch(
        f"SELECT doc, {wait.due} AS due FROM feed.messages"
        f" WHERE state = $1 AND NOT {wait.missed} AND {wait.due} <= $2"
        f" ORDER BY {wait.due} LIMIT $3",
        wait.state,
        now,
        limit,
    )
    return [(_state_decoder.decode(r["doc"]), r["due"]) for r in rows]


async def mark_missed(conn: asyncpg.Connection, stage: Stage, keys: list[Key]) -> None:
    await conn.execute(
        f"UPDATE feed.messages m SET {WAITS[stage].missed} = true"
        " FROM unnest($1::text[], $2::text[]) AS k(channel, key)"
        " WHERE m.channel = k.channel AND m.key = k.key",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )


async def reset(conn: asyncpg.Connection) -> None:
    """Forget the feed's own state (a rebuild of the feed re-derives it from the log; the
    events already in the feed stay, and re-derived ones keep their ids)."""
    await conn.execute("TRUNCATE feed.messages, feed.instances")


class Stored(msgspec.Struct, frozen=True):
    seq: int
    id: str
    type: str
    channel: str
    position: int
    created_at: dt.datetime
    body: bytes


_STORED = "SELECT seq, id::text AS id, type, channel, position, created_at, body FROM feed.events"


def _stored(r: asyncpg.Record) -> Stored:
    return Stored(
        r["seq"], r["id"], r["type"], r["channel"], r["position"], r["created_at"], r["body"]
    )


async def after(
    conn: asyncpg.Connection | asyncpg.Pool,
    seq: int,
    *,
    channels: list[str] | None = None,
    types: list[str] | None = None,
    limit: int = 100,
) -> list[Stored]:
    """Feed events after ``seq`` in order, optionally only of these channels and types."""
    rows = await conn.fetch(
        f"{_STORED} WHERE seq > $1"
        " AND (cardinality($2::text[]) = 0 OR channel = ANY($2::text[]))"
        " AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[]))"
        " ORDER BY seq LIMIT $4",
        seq,
        channels or [],
        types or [],
        limit,
    )
    return [_stored(r) for r in rows]


async def by_seq(conn: asyncpg.Connection | asyncpg.Pool, seq: int) -> Stored | None:
    row = await conn.fetchrow(f"{_STORED} WHERE seq = $1", seq)
    return _stored(row) if row else None


async def first_seq_from_position(conn: asyncpg.Connection | asyncpg.Pool, position: int) -> int:
    """The seq just before the first feed event derived from log ``position`` or later."""
    value = await conn.fetchval("SELECT min(seq) FROM feed.events WHERE position >= $1", position)
    if value is None:
        return await last_seq(conn)
    return int(value) - 1
