"""Read and write the read models of one schema (``rm`` live, ``rm_build_*`` during rebuild)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import asyncpg
import msgspec

from projections.fold import (
    Batch,
    Deadlines,
    Key,
    MissedAcks,
    ReceiptKey,
)
from projections.message_state import Failure, MessageState, Milestone

LIVE = "rm"
_SCHEMA = re.compile(r"^rm(_[a-z0-9_]{1,50})?$")

_milestones = msgspec.json.Decoder(dict[str, Milestone])
_failures = msgspec.json.Decoder(list[Failure])
_encode = msgspec.json.Encoder()

#: rm.messages columns in upsert order, with the SQL type of each array parameter
MESSAGE_TYPES: tuple[tuple[str, str], ...] = (
    ("channel", "text"),
    ("key", "text"),
    ("provider", "text"),
    ("direction", "text"),
    ("state", "text"),
    ("rank", "smallint"),
    ("state_at", "timestamptz"),
    ("milestones", "jsonb"),
    ("failures", "jsonb"),
    ("observed_in", "boolean"),
    ("observed_out", "boolean"),
    ("chat", "text"),
    ("sender", "text"),
    ("kind", "text"),
    ("text", "text"),
    ("media", "text"),
    ("quoted", "text"),
    ("derived_key", "boolean"),
    ("first_position", "bigint"),
    ("last_position", "bigint"),
    ("first_seen_at", "timestamptz"),
    ("last_seen_at", "timestamptz"),
    ("sent_due_at", "timestamptz"),
    ("sent_by", "timestamptz"),
    ("missed_sent", "boolean"),
    ("delivered_due_at", "timestamptz"),
    ("delivered_by", "timestamptz"),
    ("missed_delivered", "boolean"),
)
MESSAGE_COLUMNS = tuple(name for name, _ in MESSAGE_TYPES)
TIMELINE_COLUMNS = (
    "channel",
    "key",
    "position",
    "seq",
    "received_at",
    "provider_time",
    "fact",
    "status",
    "raw",
    "participant",
    "error_code",
    "error_text",
    "advanced",
    "duplicate_of",
)
HISTORY_COLUMNS = (
    "channel",
    "position",
    "seq",
    "status",
    "raw",
    "reason",
    "received_at",
    "provider_time",
)
QUARANTINE_COLUMNS = ("position", "channel", "provider", "reason", "received_at")


def schema_name(schema: str) -> str:
    """Schema names are interpolated into SQL, so only our own shapes are accepted."""
    if not _SCHEMA.match(schema):
        raise ValueError(f"not a read-model schema name: {schema!r}")
    return schema


def _upsert_messages_sql(s: str) -> str:
    cols = ", ".join(MESSAGE_COLUMNS)
    params = ", ".join(
        f"${i + 1}::{'text' if t == 'jsonb' else t}[]" for i, (_, t) in enumerate(MESSAGE_TYPES)
    )
    select = ", ".join(f"{c}::jsonb" if t == "jsonb" else c for c, t in MESSAGE_TYPES)
    updates = ", ".join(f"{c} = excluded.{c}" for c in MESSAGE_COLUMNS[2:])
    return (
        f"INSERT INTO {s}.messages ({cols}) SELECT {select} FROM unnest({params}) AS t({cols})"
        f" ON CONFLICT (channel, key) DO UPDATE SET {updates}"
    )


async def load_messages(
    conn: asyncpg.Connection, schema: str, keys: Iterable[Key]
) -> tuple[dict[Key, MessageState], dict[Key, MissedAcks]]:
    keys = list(keys)
    if not keys:
        return {}, {}
    s = schema_name(schema)
    rows = await conn.fetch(
        f"SELECT m.channel, m.key, m.provider, m.milestones::text AS milestones,"
        f" m.failures::text AS failures, m.observed_in, m.observed_out, m.chat, m.sender,"
        f" m.kind, m.text, m.media, m.quoted, m.derived_key, m.first_position,"
        f" m.last_position, m.first_seen_at, m.last_seen_at, m.sent_due_at, m.sent_by,"
        f" m.missed_sent, m.delivered_due_at, m.delivered_by, m.missed_delivered"
        f" FROM {s}.messages m JOIN unnest($1::text[], $2::text[]) AS k(channel, key)"
        f" ON m.channel = k.channel AND m.key = k.key",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    states: dict[Key, MessageState] = {}
    missed: dict[Key, MissedAcks] = {}
    for r in rows:
        k = (r["channel"], r["key"])
        states[k] = MessageState(
            channel=r["channel"],
            key=r["key"],
            provider=r["provider"],
            observed_in=r["observed_in"],
            observed_out=r["observed_out"],
            milestones=_milestones.decode(r["milestones"]),
            failures=_failures.decode(r["failures"]),
            chat=r["chat"],
            sender=r["sender"],
            kind=r["kind"],
            text=r["text"],
            media=r["media"],
            quoted=r["quoted"],
            derived_key=r["derived_key"],
            first_position=r["first_position"],
            last_position=r["last_position"],
            first_seen_at=r["first_seen_at"],
            last_seen_at=r["last_seen_at"],
        )
        missed[k] = MissedAcks(
            sent_due_at=r["sent_due_at"],
            sent_by=r["sent_by"],
            missed_sent=r["missed_sent"],
            delivered_due_at=r["delivered_due_at"],
            delivered_by=r["delivered_by"],
            missed_delivered=r["missed_delivered"],
        )
    return states, missed


async def load_receipts(
    conn: asyncpg.Connection, schema: str, keys: Iterable[ReceiptKey]
) -> dict[ReceiptKey, MessageState]:
    keys = list(keys)
    if not keys:
        return {}
    s = schema_name(schema)
    rows = await conn.fetch(
        f"SELECT r.channel, r.key, r.participant, r.milestones::text AS milestones"
        f" FROM {s}.receipts r"
        f" JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(channel, key, participant)"
        f" ON r.channel = k.channel AND r.key = k.key AND r.participant = k.participant",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return {
        (r["channel"], r["key"], r["participant"]): MessageState(
            channel=r["channel"],
            key=r["key"],
            provider="",
            observed_out=True,
            milestones=_milestones.decode(r["milestones"]),
        )
        for r in rows
    }


async def load_deadlines(conn: asyncpg.Connection) -> dict[str, Deadlines]:
    rows = await conn.fetch("SELECT name, sent_deadline_s, delivered_deadline_s FROM channels")
    return {
        r["name"]: Deadlines(
            sent=dt.timedelta(seconds=r["sent_deadline_s"]),
            delivered=dt.timedelta(seconds=r["delivered_deadline_s"]),
        )
        for r in rows
    }


def _message_columns(batch: Batch) -> list[list[object]]:
    columns: list[list[object]] = [[] for _ in MESSAGE_COLUMNS]
    for k, m in batch.messages.items():
        x = batch.missed[k]
        values = (
            m.channel,
            m.key,
            m.provider,
            m.direction,
            m.state,
            m.rank,
            m.state_at,
            _encode.encode(m.milestones).decode(),
            _encode.encode(m.failures).decode(),
            m.observed_in,
            m.observed_out,
            m.chat,
            m.sender,
            m.kind,
            m.text,
            m.media,
            m.quoted,
            m.derived_key,
            m.first_position,
            m.last_position,
            m.first_seen_at,
            m.last_seen_at,
            x.sent_due_at,
            x.sent_by,
            x.missed_sent,
            x.delivered_due_at,
            x.delivered_by,
            x.missed_delivered,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


async def write(conn: asyncpg.Connection, schema: str, batch: Batch) -> None:
    """Apply a folded batch; the caller's transaction also advances the checkpoint."""
    s = schema_name(schema)
    if batch.messages:
        await conn.execute(_upsert_messages_sql(s), *_message_columns(batch))
    if batch.timeline:
        await conn.copy_records_to_table(
            "timeline",
            schema_name=s,
            columns=TIMELINE_COLUMNS,
            records=[tuple(msgspec.structs.astuple(r)) for r in batch.timeline],
        )
    if batch.receipts:
        items = list(batch.receipts.items())
        await conn.execute(
            f"INSERT INTO {s}.receipts (channel, key, participant, state, milestones)"
            f" SELECT c, k, p, st, m::jsonb"
            f" FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])"
            f" AS t(c, k, p, st, m)"
            f" ON CONFLICT (channel, key, participant)"
            f" DO UPDATE SET state = excluded.state, milestones = excluded.milestones",
            [k[0] for k, _ in items],
            [k[1] for k, _ in items],
            [k[2] for k, _ in items],
            [r.state for _, r in items],
            [_encode.encode(r.milestones).decode() for _, r in items],
        )
    if batch.instances:
        await conn.copy_records_to_table(
            "instance_history",
            schema_name=s,
            columns=HISTORY_COLUMNS,
            records=[tuple(msgspec.structs.astuple(r))[:8] for r in batch.instances],
        )
        latest = {}
        for row in batch.instances:  # log order: the last one per channel wins
            latest[row.channel] = row
        rows = list(latest.values())
        await conn.execute(
            f"INSERT INTO {s}.instance_status"
            f" (channel, provider, status, raw, reason, position, received_at, provider_time)"
            f" SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            f" $6::bigint[], $7::timestamptz[], $8::float8[])"
            f" ON CONFLICT (channel) DO UPDATE SET provider = excluded.provider,"
            f" status = excluded.status, raw = excluded.raw, reason = excluded.reason,"
            f" position = excluded.position, received_at = excluded.received_at,"
            f" provider_time = excluded.provider_time"
            f" WHERE {s}.instance_status.position <= excluded.position",
            [r.channel for r in rows],
            [r.provider for r in rows],
            [r.status for r in rows],
            [r.raw for r in rows],
            [r.reason for r in rows],
            [r.position for r in rows],
            [r.received_at for r in rows],
            [r.provider_time for r in rows],
        )
    if batch.quarantine:
        await conn.copy_records_to_table(
            "quarantine",
            schema_name=s,
            columns=QUARANTINE_COLUMNS,
            records=[tuple(msgspec.structs.astuple(r)) for r in batch.quarantine],
        )
    if batch.newly_missed:
        await _count_missed(conn, s, batch.newly_missed)


async def _count_missed(conn: asyncpg.Connection, s: str, missed: list[tuple[str, str]]) -> None:
    await conn.execute(
        f"INSERT INTO {s}.missed_counts (channel, stage, n)"
        f" SELECT c, st, count(*) FROM unnest($1::text[], $2::text[]) AS t(c, st) GROUP BY c, st"
        f" ON CONFLICT (channel, stage) DO UPDATE SET n = {s}.missed_counts.n + excluded.n",
        [m[0] for m in missed],
        [m[1] for m in missed],
    )


async def sweep(conn: asyncpg.Connection, schema: str, now: dt.datetime) -> int:
    """Mark messages whose deadline passed while still waiting; each is counted once."""
    s = schema_name(schema)
    rows = await conn.fetch(
        f"""WITH sent AS (
                UPDATE {s}.messages SET missed_sent = true
                WHERE state = 'sending' AND sent_due_at IS NOT NULL AND sent_due_at <= $1
                  AND NOT missed_sent
                RETURNING channel, 'sent'::text AS stage),
            delivered AS (
                UPDATE {s}.messages SET missed_delivered = true
                WHERE state = 'sent' AND delivered_due_at IS NOT NULL AND delivered_due_at <= $1
                  AND NOT missed_delivered
                RETURNING channel, 'delivered'::text AS stage)
            SELECT channel, stage FROM sent UNION ALL SELECT channel, stage FROM delivered""",
        now,
    )
    if rows:
        await _count_missed(conn, s, [(r["channel"], r["stage"]) for r in rows])
    return len(rows)
