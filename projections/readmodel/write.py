"""What the projector writes: one folded batch, in the transaction of its checkpoint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter

import asyncpg
import msgspec

from projections.readmodel import codecs, schema_name
from projections.readmodel.columns import (
    ANOMALY_COUNTS,
    CHANNEL_ACTIVITY,
    FAILURE_COUNTS,
    INSTANCE_HISTORY,
    INSTANCE_STATUS,
    MESSAGES,
    MISSED_COUNTS,
    QUARANTINE,
    RECEIPTS,
    TIMELINE,
    Table,
)
from projections.rules.deadlines import MISSED_FIELDS, WAITS, MissedAcks, stage_overdue_sql
from projections.rules.message_state import MessageState
from projections.rules.rows import ActivityRow, Batch, Key, TimelineRow, Totals

# messages columns: MessageState fields (stored or derived), the MissedAcks fields in one
# run, then MessageState fields again (columns added by later migrations come last)
_MISSED_AT = MESSAGES.names.index(MISSED_FIELDS[0])
_MISSED_END = _MISSED_AT + len(MISSED_FIELDS)
assert MESSAGES.names[_MISSED_AT:_MISSED_END] == MISSED_FIELDS, "MissedAcks columns in one run"


def _getter(names: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    """``attrgetter`` that always gives a tuple (it gives the bare value for one name)."""
    if len(names) == 1:
        name = names[0]
        return lambda o: (getattr(o, name),)
    return attrgetter(*names) if names else lambda o: ()


_state_values = _getter(MESSAGES.names[:_MISSED_AT])
_missed_values = _getter(MISSED_FIELDS)
_state_after = _getter(MESSAGES.names[_MISSED_END:])
_JSON_AT = tuple(i for i, c in enumerate(MESSAGES.columns) if c.type == "jsonb")


def message_values(m: MessageState, x: MissedAcks) -> list[object]:
    """One ``messages`` row in column order (jsonb columns still as values)."""
    return [*_state_values(m), *_missed_values(x), *_state_after(m)]


_N_HISTORY = len(INSTANCE_HISTORY.columns)


def _message_columns(
    messages: Mapping[Key, MessageState], missed: Mapping[Key, MissedAcks]
) -> list[list[object]]:
    columns: list[list[object]] = [[] for _ in MESSAGES.columns]
    for k, m in messages.items():
        values = message_values(m, missed[k])
        for i in _JSON_AT:
            values[i] = codecs.encode(values[i])  # type: ignore[arg-type]
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


async def upsert_messages(
    conn: asyncpg.Connection,
    schema: str,
    messages: Mapping[Key, MessageState],
    missed: Mapping[Key, MissedAcks],
) -> None:
    if messages:
        s = schema_name(schema)
        await conn.execute(MESSAGES.unnest_upsert(s), *_message_columns(messages, missed))


_json = msgspec.json.Encoder().encode


def _record(m: MessageState, x: MissedAcks) -> tuple[object, ...]:
    values = message_values(m, x)
    for i in _JSON_AT:
        values[i] = _json(values[i])
    return tuple(values)


async def copy_messages(
    conn: asyncpg.Connection, schema: str, rows: Iterable[tuple[MessageState, MissedAcks]]
) -> None:
    """Insert messages the table does not hold yet: binary COPY, one record per message
    (the connection needs :func:`projections.readmodel.bulk.bulk_codecs` for jsonb)."""
    records = [_record(m, x) for m, x in rows]
    if records:
        await conn.copy_records_to_table(
            MESSAGES.name, schema_name=schema_name(schema), columns=MESSAGES.names, records=records
        )


async def copy_timeline(conn: asyncpg.Connection, schema: str, rows: Sequence[TimelineRow]) -> None:
    """Append timeline rows (binary COPY; a timeline row is never changed once written)."""
    if rows:
        await conn.copy_records_to_table(
            TIMELINE.name,
            schema_name=schema_name(schema),
            columns=TIMELINE.names,
            records=[tuple(msgspec.structs.astuple(r)) for r in rows],
        )


async def write(conn: asyncpg.Connection, schema: str, batch: Batch, *, copy: bool = False) -> None:
    """Apply a folded batch; the caller's transaction also advances the checkpoint.

    With ``copy`` (a connection with binary jsonb), the messages the batch created go in by
    COPY and only those it changed are upserted: the table held no row for them when the
    batch loaded, and the write lock (or a schema of one's own) keeps it so until commit.
    """
    s = schema_name(schema)
    if copy and batch.created:
        created = batch.created
        await copy_messages(
            conn, s, [(m, batch.missed[k]) for k, m in batch.messages.items() if k in created]
        )
        changed = {k: m for k, m in batch.messages.items() if k not in created}
        await upsert_messages(conn, s, changed, batch.missed)
    else:
        await upsert_messages(conn, s, batch.messages, batch.missed)
    await copy_timeline(conn, s, batch.timeline)
    if batch.receipts:
        items = list(batch.receipts.items())
        await conn.execute(
            RECEIPTS.unnest_upsert(s),
            [k[0] for k, _ in items],
            [k[1] for k, _ in items],
            [k[2] for k, _ in items],
            [r.state for _, r in items],
            [codecs.encode(r.milestones) for _, r in items],
        )
    if batch.instances:
        await conn.copy_records_to_table(
            INSTANCE_HISTORY.name,
            schema_name=s,
            columns=INSTANCE_HISTORY.names,
            records=[tuple(msgspec.structs.astuple(r))[:_N_HISTORY] for r in batch.instances],
        )
        latest = {}
        for row in batch.instances:  # log order: the last one per channel wins
            latest[row.channel] = row
        rows = list(latest.values())
        await conn.execute(
            INSTANCE_STATUS.unnest_upsert(
                s, f" WHERE {s}.instance_status.position <= excluded.position"
            ),
            *([getattr(r, name) for r in rows] for name in INSTANCE_STATUS.names),
        )
    if batch.quarantine:
        await conn.copy_records_to_table(
            QUARANTINE.name,
            schema_name=s,
            columns=QUARANTINE.names,
            records=[tuple(msgspec.structs.astuple(r)) for r in batch.quarantine],
        )
    if batch.newly_missed:
        await _count_missed(conn, s, batch.newly_missed)
    if batch.anomaly_deltas:
        # messages with each anomaly now: a message can lose one as well as gain it
        await _add_counts(conn, s, ANOMALY_COUNTS, batch.anomaly_deltas, forget_zero=True)
    if batch.new_failures:
        await _add_counts(conn, s, FAILURE_COUNTS, [(*f, 1) for f in batch.new_failures])
    if batch.activity:
        await _activity(conn, s, batch.activity)


async def add_totals(conn: asyncpg.Connection, schema: str, totals: Totals) -> None:
    """Add what many batches' counts and activity sum to (a bulk fold's, or its shards'
    merged), in key order. The same rows as writing each batch's share as it was folded:
    counts add, activity is a maximum, and rows at zero are forgotten either way."""
    s = schema_name(schema)
    for table, counts, forget_zero in (
        (MISSED_COUNTS, totals.missed, False),
        (ANOMALY_COUNTS, totals.anomalies, True),
        (FAILURE_COUNTS, totals.failures, False),
    ):
        if counts:
            rows = [(*k, n) for k, n in sorted(counts.items())]
            await _add_counts(conn, s, table, rows, forget_zero=forget_zero)
    if totals.activity:
        await _activity(conn, s, totals.activity_rows())


async def _activity(conn: asyncpg.Connection, s: str, rows: Sequence[ActivityRow]) -> None:
    """Each channel's latest outgoing message and ack: a maximum, whatever the order; rows
    in channel order, so live shards writing at once lock them in one order."""
    rows = sorted(rows, key=lambda r: r.channel)
    await conn.execute(
        f"INSERT INTO {s}.channel_activity AS a (channel, last_out_at, last_ack_at)"
        f" SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])"
        f" ON CONFLICT (channel) DO UPDATE SET"
        f" last_out_at = greatest(a.last_out_at, excluded.last_out_at),"
        f" last_ack_at = greatest(a.last_ack_at, excluded.last_ack_at)",
        *([getattr(r, n) for r in rows] for n in CHANNEL_ACTIVITY.names),
    )


async def _add_counts(
    conn: asyncpg.Connection,
    s: str,
    table: Table,
    rows: Sequence[tuple[object, ...]],
    *,
    forget_zero: bool = False,
) -> None:
    """Add to a counter table (its key columns, then ``n``): each row is its key values and
    the amount to add. ``forget_zero`` deletes the rows that reach zero (so where batches were
    cut, which decides whether a row passed through zero, leaves no trace).

    Rows go in key order: projection shards add to the same counters side by side, and
    each takes the row locks in one order (tables in the order :func:`write` writes them,
    keys sorted), so two shards' batches never deadlock."""
    keys = ", ".join(table.key)
    arrays = ", ".join(f"${i + 1}::text[]" for i in range(len(table.key)))
    await conn.execute(
        f"INSERT INTO {s}.{table.name} ({keys}, n)"
        f" SELECT {keys}, sum(n) FROM unnest({arrays}, ${len(table.key) + 1}::bigint[])"
        f" AS t({keys}, n) GROUP BY {keys}{' HAVING sum(n) <> 0' if forget_zero else ''}"
        f" ORDER BY {keys}"
        f" ON CONFLICT ({keys}) DO UPDATE SET n = {s}.{table.name}.n + excluded.n",
        *([r[i] for r in rows] for i in range(len(table.key) + 1)),
    )
    if forget_zero:
        await conn.execute(f"DELETE FROM {s}.{table.name} WHERE n = 0")


async def _count_missed(conn: asyncpg.Connection, s: str, missed: list[tuple[str, str]]) -> None:
    await _add_counts(conn, s, MISSED_COUNTS, [(*m, 1) for m in missed])


def _sweep_sql(s: str) -> str:
    parts = [
        f"{stage} AS (UPDATE {s}.messages SET {wait.missed} = true"
        f" WHERE {stage_overdue_sql(stage, '$1')} AND NOT {wait.missed}"
        f" RETURNING channel, '{stage}'::text AS stage)"
        for stage, wait in WAITS.items()
    ]
    union = " UNION ALL ".join(f"SELECT channel, stage FROM {stage}" for stage in WAITS)
    return f"WITH {', '.join(parts)} {union}"


async def sweep(conn: asyncpg.Connection, schema: str, now: dt.datetime) -> int:
    """Mark messages whose deadline passed while still waiting; each is counted once."""
    s = schema_name(schema)
    rows = await conn.fetch(_sweep_sql(s), now)
    if rows:
        await _count_missed(conn, s, [(r["channel"], r["stage"]) for r in rows])
    return len(rows)
