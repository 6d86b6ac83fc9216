"""Everything the query API and the metrics snapshot read from the read model.

Every query is answered from an index: messages by their primary key or the listing indexes
``(channel, first_position DESC, key)`` / ``(channel, state, first_position DESC, key)``,
timelines, receipts and instance history by their primary keys. ``tests/service/api/test_api.py``
checks the plans of the SQL constants here. Answers are this module's Structs, decoded
once; ``service/`` maps them to API bodies and adds links.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

import asyncpg
import msgspec

from projections.facts import InstanceStatus, Origin
from projections.failures import FailureClass
from projections.readmodel import LIVE, codecs
from projections.readmodel.columns import (
    INSTANCE_HISTORY,
    INSTANCE_STATUS,
    MESSAGES,
    QUARANTINE,
    RECEIPTS,
    TIMELINE,
)
from projections.rules.deadlines import (
    MISSED_FIELDS,
    WAITS,
    MissedAcks,
    Stage,
    overdue_for,
    overdue_sql,
    stage_overdue_sql,
)
from projections.rules.message_state import Failure, Milestone

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

#: a message's timeline is cut here (a message gets a handful of facts; this bounds abuse)
TIMELINE_LIMIT = 1000

# -- instances and channels ----------------------------------------------------------------


class InstanceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``instance_status`` (without its channel and provider)."""

    status: InstanceStatus
    raw: str
    reason: str | None
    position: int
    received_at: dt.datetime
    provider_time: float | None


class HistoryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``instance_history`` (without its channel)."""

    position: int
    seq: int
    status: InstanceStatus
    raw: str
    reason: str | None
    received_at: dt.datetime
    provider_time: float | None


_INSTANCE_FIELDS = tuple(InstanceRecord.__struct_fields__)
_HISTORY_FIELDS = tuple(HistoryRecord.__struct_fields__)

COUNTS_SQL = f"SELECT channel, state, count(*) AS n FROM {LIVE}.messages GROUP BY channel, state"
INSTANCES_SQL = (
    f"SELECT channel, provider, {INSTANCE_STATUS.select_list(_INSTANCE_FIELDS)}"
    f" FROM {LIVE}.instance_status"
)
INSTANCE_SQL = (
    f"SELECT {INSTANCE_STATUS.select_list(_INSTANCE_FIELDS)}"
    f" FROM {LIVE}.instance_status WHERE channel = $1"
)
HISTORY_SQL = (
    f"SELECT {INSTANCE_HISTORY.select_list(_HISTORY_FIELDS)} FROM {LIVE}.instance_history"
    " WHERE channel = $1 ORDER BY position DESC, seq DESC LIMIT $2"
)
#: the provider of a channel's newest message (when the log no longer has the channel)
PROVIDER_SQL = (
    f"SELECT provider FROM {LIVE}.messages WHERE channel = $1 ORDER BY first_position DESC LIMIT 1"
)


def _instance(row: asyncpg.Record) -> InstanceRecord:
    return InstanceRecord(**{f: row[f] for f in _INSTANCE_FIELDS})


async def state_counts(conn: Conn) -> dict[str, dict[str, int]]:
    """channel → state → number of messages."""
    counts: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(COUNTS_SQL):
        counts.setdefault(r["channel"], {})[r["state"]] = r["n"]
    return counts


async def instances(conn: Conn) -> dict[str, InstanceRecord]:
    """channel → its current instance status."""
    return {r["channel"]: _instance(r) for r in await conn.fetch(INSTANCES_SQL)}


async def channel_provider(conn: Conn, name: str) -> str | None:
    """The provider of the channel's newest message, if the read model knows the channel."""
    value = await conn.fetchval(PROVIDER_SQL, name)
    return str(value) if value is not None else None


async def instance_status(
    conn: Conn, name: str, limit: int
) -> tuple[InstanceRecord | None, list[HistoryRecord]]:
    current = await conn.fetchrow(INSTANCE_SQL, name)
    history = [
        HistoryRecord(**{f: r[f] for f in _HISTORY_FIELDS})
        for r in await conn.fetch(HISTORY_SQL, name, limit)
    ]
    return (_instance(current) if current else None), history


# -- message listings ----------------------------------------------------------------------


class MessageFilter(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    now: dt.datetime
    state: str | None = None
    direction: str | None = None
    overdue: bool | None = None
    #: messages that have this anomaly (one of ``message_state.ANOMALIES``)
    anomaly: str | None = None
    #: messages whose first failure has this class (``projections.failures``)
    failure_class: str | None = None
    #: incoming messages by who wrote them: ``customer`` or ``system``
    origin: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    after: tuple[int, str] | None = None
    limit: int = 50
    #: console only: a message id, or text / phone digits found in the chat or sender
    search: str | None = None
    #: console only: messages with (True) or without (False) a failure on record
    failed: bool | None = None
    #: filters no index serves (search, failed) look at this many log positions per page
    window: int = 20_000


MAX_POSITION = 2**63 - 1


def windowed(f: MessageFilter) -> bool:
    """The filter has a predicate no index serves, so a page looks at ``window`` positions."""
    return f.search is not None or f.failed is not None


def window_floor(f: MessageFilter) -> int:
    """The lowest ``first_position`` a windowed page looks at."""
    top = f.after[0] if f.after is not None else MAX_POSITION
    return max(top - f.window, 0)


class MessageSummaryRecord(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    key: str
    provider: str
    direction: str
    state: str
    state_at: dt.datetime
    kind: str | None
    chat: str | None
    sender: str | None
    text: str | None
    first_position: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    missed_sent: bool
    missed_delivered: bool
    anomalies: list[str]
    #: the class of the message's first failure (None: no failure on record)
    failure_class: FailureClass | None
    #: incoming: customer or system; outgoing: None
    origin: Origin | None
    #: group receipts: participants with one, and how many have each
    participants: int
    delivered_to: int
    read_by: int
    played_by: int
    #: the ack this message is overdue for at the filter's ``now``, if any
    overdue_for: Stage | None


_SUMMARY_FIELDS = tuple(f for f in MessageSummaryRecord.__struct_fields__ if f != "overdue_for")
_SUMMARY_PLAIN = tuple(f for f in _SUMMARY_FIELDS if f != "anomalies")
_DUE_FIELDS = tuple(w.due for w in WAITS.values())
_SUMMARY_COLUMNS = MESSAGES.select_list(
    _SUMMARY_FIELDS + tuple(d for d in _DUE_FIELDS if d not in _SUMMARY_FIELDS)
)


def list_messages_sql(f: MessageFilter) -> tuple[str, list[object]]:
    """Only the filters given become predicates, so each query gets the plan it deserves.

    Newest first by ``first_position DESC, key``: the position that created a message never
    changes, so a cursor stays exact while new messages arrive (they sort before page 1).
    """
    args: list[object] = [f.channel]

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    where = ["channel = $1"]
    if f.state is not None:
        where.append(f"state = {arg(f.state)}")
    if f.direction is not None:
        where.append(f"direction = {arg(f.direction)}")
    if f.failure_class is not None:
        where.append(f"failure_class = {arg(f.failure_class)}")
    if f.origin is not None:
        where.append(f"origin = {arg(f.origin)}")
    if f.overdue is not None:
        due = overdue_sql(arg(f.now))
        where.append(due if f.overdue else f"NOT coalesce({due}, false)")
    if f.anomaly is not None:
        # the first term is the predicate of the partial index of sql/065_anomalies.sql
        where.append(f"anomalies <> '[]'::jsonb AND anomalies ? {arg(f.anomaly)}")
    if f.since is not None:
        where.append(f"first_seen_at >= {arg(f.since)}")
    if f.until is not None:
        where.append(f"first_seen_at < {arg(f.until)}")
    if f.search is not None:
        text = arg(f.search)
        digits = arg("".join(c for c in f.search if c.isdigit()) or None)
        where.append(
            f"(key = {text} OR strpos(chat, {text}) > 0 OR strpos(sender, {text}) > 0"
            f" OR strpos(regexp_replace(coalesce(chat, '') || ' ' || coalesce(sender, ''),"
            f" '[^0-9]', '', 'g'), {digits}) > 0)"
        )
    if f.failed is not None:
        where.append(("" if f.failed else "NOT ") + "(failures <> '[]'::jsonb)")
    if windowed(f):
        where.append(f"first_position >= {arg(window_floor(f))}")
    if f.after is not None:
        position, key = arg(f.after[0]), arg(f.after[1])
        where.append(
            f"first_position <= {position} AND (first_position < {position} OR key > {key})"
        )
    sql = (
        f"SELECT {_SUMMARY_COLUMNS} FROM {LIVE}.messages WHERE {' AND '.join(where)}"
        f" ORDER BY first_position DESC, key LIMIT {arg(f.limit + 1)}"
    )
    return sql, args


def _overdue(row: asyncpg.Record, now: dt.datetime) -> Stage | None:
    return overdue_for(row["state"], row["sent_due_at"], row["delivered_due_at"], now)


async def messages(conn: Conn, f: MessageFilter) -> tuple[list[MessageSummaryRecord], bool]:
    """A page of messages, and whether more follow."""
    sql, args = list_messages_sql(f)
    rows = await conn.fetch(sql, *args)
    items = [
        MessageSummaryRecord(
            **{name: r[name] for name in _SUMMARY_PLAIN},
            anomalies=codecs.decode_names(r["anomalies"]),
            overdue_for=_overdue(r, f.now),
        )
        for r in rows[: f.limit]
    ]
    return items, len(rows) > f.limit


# -- one message ---------------------------------------------------------------------------


class ReceiptRecord(msgspec.Struct, frozen=True, kw_only=True):
    participant: str
    state: str
    milestones: dict[str, Milestone]


class TimelineRecord(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    seq: int
    received_at: dt.datetime
    provider_time: float | None
    fact: str
    status: str
    raw: str
    participant: str | None
    error_code: str | None
    error_text: str | None
    advanced: bool
    duplicate_of: int | None


class MessageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A ``messages`` row decoded, its receipts and (a bounded prefix of) its timeline."""

    provider: str
    direction: str
    state: str
    state_at: dt.datetime
    milestones: dict[str, Milestone]
    failures: list[Failure]
    failure_class: FailureClass | None
    participants: int
    delivered_to: int
    read_by: int
    played_by: int
    origin: Origin | None
    chat: str | None
    sender: str | None
    kind: str | None
    text: str | None
    media: str | None
    quoted: str | None
    derived_key: bool
    first_position: int
    last_position: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    anomalies: list[str]
    missed: MissedAcks
    overdue_for: Stage | None
    receipts: list[ReceiptRecord]
    timeline: list[TimelineRecord]
    timeline_truncated: bool


_DETAIL_FIELDS = tuple(
    f
    for f in MessageRecord.__struct_fields__
    if f not in ("missed", "overdue_for", "receipts", "timeline", "timeline_truncated")
)
_TIMELINE_FIELDS = tuple(TimelineRecord.__struct_fields__)

MESSAGE_SQL = (
    f"SELECT {MESSAGES.select_list(_DETAIL_FIELDS + MISSED_FIELDS)}"
    f" FROM {LIVE}.messages WHERE channel = $1 AND key = $2"
)
RECEIPTS_SQL = (
    f"SELECT {RECEIPTS.select_list(('participant', 'state', 'milestones'))}"
    f" FROM {LIVE}.receipts WHERE channel = $1 AND key = $2 ORDER BY participant"
)
TIMELINE_SQL = (
    f"SELECT {TIMELINE.select_list(_TIMELINE_FIELDS)} FROM {LIVE}.timeline"
    " WHERE channel = $1 AND key = $2 ORDER BY position, seq LIMIT $3"
)


async def message(
    conn: asyncpg.Connection, channel: str, key: str, now: dt.datetime
) -> MessageRecord | None:
    """The message, its receipts and its timeline, read from one snapshot so they agree."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(MESSAGE_SQL, channel, key)
        if row is None:
            return None
        receipts = await conn.fetch(RECEIPTS_SQL, channel, key)
        timeline = await conn.fetch(TIMELINE_SQL, channel, key, TIMELINE_LIMIT + 1)
    values = {f: row[f] for f in _DETAIL_FIELDS}
    values["milestones"] = codecs.decode_milestones(row["milestones"])
    values["failures"] = codecs.decode_failures(row["failures"])
    values["anomalies"] = codecs.decode_names(row["anomalies"])
    return MessageRecord(
        **values,
        missed=MissedAcks(**{f: row[f] for f in MISSED_FIELDS}),
        overdue_for=_overdue(row, now),
        receipts=[
            ReceiptRecord(
                participant=r["participant"],
                state=r["state"],
                milestones=codecs.decode_milestones(r["milestones"]),
            )
            for r in receipts
        ],
        timeline=[
            TimelineRecord(**{f: t[f] for f in _TIMELINE_FIELDS}) for t in timeline[:TIMELINE_LIMIT]
        ],
        timeline_truncated=len(timeline) > TIMELINE_LIMIT,
    )


# -- quarantine ----------------------------------------------------------------------------


class QuarantineRecord(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    channel: str
    provider: str
    reason: str
    received_at: dt.datetime


def quarantine_sql(channel: str | None) -> str:
    where = "position > $1" + (" AND channel = $3" if channel is not None else "")
    return (
        f"SELECT {QUARANTINE.select_list()} FROM {LIVE}.quarantine"
        f" WHERE {where} ORDER BY position LIMIT $2"
    )


async def quarantine(
    conn: Conn, after: int, limit: int, channel: str | None
) -> tuple[list[QuarantineRecord], bool]:
    args: list[object] = [after, limit + 1] + ([channel] if channel is not None else [])
    rows = await conn.fetch(quarantine_sql(channel), *args)
    items = [QuarantineRecord(**{f: r[f] for f in QUARANTINE.names}) for r in rows[:limit]]
    return items, len(rows) > limit


# -- the metrics snapshot's figures --------------------------------------------------------


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """What the metrics snapshot reads from the read model, from one transaction."""

    #: (channel, stage, n) messages overdue now, by the ack they wait for
    overdue: list[tuple[str, str, int]]
    #: (channel, stage, n) messages that ever missed a deadline
    missed: list[tuple[str, str, int]]
    #: (channel, provider, status) current instance statuses
    instances: list[tuple[str, str, str]]
    #: (channel, anomaly, n) messages that have each anomaly now
    anomalies: list[tuple[str, str, int]] = []
    #: (channel, provider, failure class, n) failures ever recorded
    failures: list[tuple[str, str, str, int]] = []


OVERDUE_COUNTS_SQL = " UNION ALL ".join(
    f"SELECT channel, '{stage}'::text AS stage, count(*) AS n FROM {LIVE}.messages"
    f" WHERE {stage_overdue_sql(stage, '$1')} GROUP BY channel"
    for stage in WAITS
)


async def figures(conn: asyncpg.Connection, now: dt.datetime) -> Figures:
    """Overdue counts at ``now``, missed counts and instance statuses (caller's transaction)."""
    overdue = await conn.fetch(OVERDUE_COUNTS_SQL, now)
    missed = await conn.fetch(f"SELECT channel, stage, n FROM {LIVE}.missed_counts")
    statuses = await conn.fetch(f"SELECT channel, provider, status FROM {LIVE}.instance_status")
    anomalies = await conn.fetch(f"SELECT channel, kind, n FROM {LIVE}.anomaly_counts")
    failures = await conn.fetch(f"SELECT channel, provider, class, n FROM {LIVE}.failure_counts")
    return Figures(
        overdue=[(r["channel"], r["stage"], r["n"]) for r in overdue],
        missed=[(r["channel"], r["stage"], r["n"]) for r in missed],
        instances=[(r["channel"], r["provider"], r["status"]) for r in statuses],
        anomalies=[(r["channel"], r["kind"], r["n"]) for r in anomalies],
        failures=[(r["channel"], r["provider"], r["class"], r["n"]) for r in failures],
    )
