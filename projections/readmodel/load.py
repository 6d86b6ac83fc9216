"""What the projector reads back before it folds a batch: the rows the batch touches."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import asyncpg

from eventstore import channels
from projections.readmodel import codecs, schema_name
from projections.readmodel.columns import MESSAGES, RECEIPTS
from projections.rules.deadlines import MISSED_FIELDS, Deadlines, MissedAcks
from projections.rules.health import Run
from projections.rules.message_state import MessageState
from projections.rules.rows import Key, ReceiptKey

#: the stored (not derived) fields of MessageState, loaded back into it
_STATE_FIELDS: tuple[str, ...] = tuple(
    c.name for c in MESSAGES.columns if not c.derived and c.name not in MISSED_FIELDS
)
_LOAD_MESSAGES = MESSAGES.select_list(_STATE_FIELDS + MISSED_FIELDS, alias="m")
_JSON = {
    "milestones": codecs.decode_milestones,
    "failures": codecs.decode_failures,
    "acks": codecs.decode_acks,
}


def message_state(row: asyncpg.Record) -> MessageState:
    """A ``messages`` row (as selected by :func:`load_messages`) back as a MessageState."""
    values = {f: row[f] for f in _STATE_FIELDS}
    for name, decode in _JSON.items():
        values[name] = decode(values[name])
    return MessageState(**values)


def missed(row: asyncpg.Record) -> MissedAcks:
    return MissedAcks(**{f: row[f] for f in MISSED_FIELDS})


async def load_messages(
    conn: asyncpg.Connection, schema: str, keys: Iterable[Key]
) -> tuple[dict[Key, MessageState], dict[Key, MissedAcks]]:
    keys = list(keys)
    if not keys:
        return {}, {}
    s = schema_name(schema)
    rows = await conn.fetch(
        f"SELECT {_LOAD_MESSAGES}"
        f" FROM {s}.messages m JOIN unnest($1::text[], $2::text[]) AS k(channel, key)"
        f" ON m.channel = k.channel AND m.key = k.key",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    states: dict[Key, MessageState] = {}
    missed_acks: dict[Key, MissedAcks] = {}
    for r in rows:
        k = (r["channel"], r["key"])
        states[k] = message_state(r)
        missed_acks[k] = missed(r)
    return states, missed_acks


async def load_receipts(
    conn: asyncpg.Connection, schema: str, keys: Iterable[ReceiptKey]
) -> dict[ReceiptKey, MessageState]:
    keys = list(keys)
    if not keys:
        return {}
    s = schema_name(schema)
    rows = await conn.fetch(
        f"SELECT {RECEIPTS.select_list(('channel', 'key', 'participant', 'milestones'), 'r')}"
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
            milestones=codecs.decode_milestones(r["milestones"]),
        )
        for r in rows
    }


async def load_deadlines(conn: asyncpg.Connection) -> dict[str, Deadlines]:
    """Each registered channel's deadlines (read from the registry, ``eventstore.channels``)."""
    return {
        name: Deadlines(sent=dt.timedelta(seconds=sent), delivered=dt.timedelta(seconds=delivered))
        for name, (sent, delivered) in (await channels.deadlines(conn)).items()
    }


async def load_runs(
    conn: asyncpg.Connection, schema: str, channels: Iterable[str]
) -> dict[str, Run]:
    """The current status run of each channel (what ``health.next_run`` continues)."""
    names = list(channels)
    if not names:
        return {}
    s = schema_name(schema)
    rows = await conn.fetch(
        f"SELECT channel, status, coalesce(changed_at, received_at) AS changed_at, stable_status"
        f" FROM {s}.instance_status WHERE channel = ANY($1::text[])",
        names,
    )
    return {r["channel"]: Run(r["status"], r["changed_at"], r["stable_status"]) for r in rows}
