"""The API's reads of the read models (schema ``rm``) and the log, and rows → bodies.

Every query is answered from an index: messages by their primary key or the listing indexes
``(channel, first_position DESC, key)`` / ``(channel, state, first_position DESC, key)``,
timelines, receipts and instance history by their primary keys, distinct channels of the
log by a skip scan of ``events (channel, position)``. ``tests/test_api.py`` checks the plans.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any, TypeAlias

import asyncpg
import msgspec

from projections.facts import RANK
from projections.message_state import Failure, Milestone
from service.api_models import (
    ChannelLinks,
    ChannelSummary,
    Content,
    FailureOut,
    HistoryEntry,
    InstanceState,
    MessageDetail,
    MessageSummary,
    MilestoneOut,
    MissedAcks,
    OverdueFor,
    QuarantineEntry,
    Receipt,
    TimelineEntry,
)

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

#: a message's timeline is cut here (a message gets a handful of facts; this bounds abuse)
TIMELINE_LIMIT = 1000

_milestones = msgspec.json.Decoder(dict[str, Milestone])
_ORDER = {"received": -1, **RANK}
_failures = msgspec.json.Decoder(list[Failure])


def event_link(position: int) -> str:
    return f"/v1/events/{position}"


def channel_link(channel: str) -> str:
    return f"/v1/channels/{urllib.parse.quote(channel, safe='')}"


def message_link(channel: str, key: str) -> str:
    return f"{channel_link(channel)}/messages/{urllib.parse.quote(key, safe='')}"


def overdue_for(row: Any, now: dt.datetime) -> OverdueFor | None:
    """Which ack a message is overdue for right now (our clock), if any."""
    if row["state"] == "sending" and row["sent_due_at"] is not None and row["sent_due_at"] <= now:
        return "sent"
    if (
        row["state"] == "sent"
        and row["delivered_due_at"] is not None
        and row["delivered_due_at"] <= now
    ):
        return "delivered"
    return None


# -- channels ------------------------------------------------------------------------------

#: Distinct channels of the log without reading it: one index probe per channel.
_LOG_CHANNELS = """
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
_COUNTS = "SELECT channel, state, count(*) AS n FROM rm.messages GROUP BY channel, state"
_INSTANCE_COLUMNS = "status, raw, reason, position, received_at, provider_time"

CHANNEL_SQL = """
SELECT coalesce(
           (SELECT provider FROM channels WHERE name = $1),
           (SELECT provider FROM events WHERE channel = $1 ORDER BY position DESC LIMIT 1),
           (SELECT provider FROM rm.messages WHERE channel = $1
            ORDER BY first_position DESC LIMIT 1)) AS provider,
       EXISTS (SELECT 1 FROM channels WHERE name = $1) AS registered
"""
HISTORY_SQL = (
    "SELECT position, seq, status, raw, reason, received_at, provider_time"
    " FROM rm.instance_history WHERE channel = $1 ORDER BY position DESC, seq DESC LIMIT $2"
)


def _instance(row: Any) -> InstanceState:
    return InstanceState(
        status=row["status"],
        raw=row["raw"],
        reason=row["reason"],
        position=row["position"],
        received_at=row["received_at"],
        provider_time=row["provider_time"],
        event=event_link(row["position"]),
    )


async def channels(conn: Conn) -> list[ChannelSummary]:
    """Registered channels plus those only the log (or the read models) still know."""
    providers: dict[str, str] = {r["name"]: r["provider"] for r in await conn.fetch(_LOG_CHANNELS)}
    registered = {
        r["name"]: r["provider"] for r in await conn.fetch("SELECT name, provider FROM channels")
    }
    providers.update(registered)
    counts: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(_COUNTS):
        counts.setdefault(r["channel"], {})[r["state"]] = r["n"]
    for name in counts.keys() - providers.keys():  # only once old log partitions are detached
        found = await channel(conn, name)
        providers[name] = found[0] if found else "unknown"
    status = {
        r["channel"]: _instance(r)
        for r in await conn.fetch(f"SELECT channel, {_INSTANCE_COLUMNS} FROM rm.instance_status")
    }
    return [
        ChannelSummary(
            name=name,
            provider=providers[name],
            registered=name in registered,
            connection=status.get(name),
            messages=counts.get(name, {}),
            total_messages=sum(counts.get(name, {}).values()),
            links=ChannelLinks(
                status=channel_link(name) + "/status", messages=channel_link(name) + "/messages"
            ),
        )
        for name in sorted(providers)
    ]


async def channel(conn: Conn, name: str) -> tuple[str, bool] | None:
    """(provider, registered) of a channel known anywhere, or None."""
    row = await conn.fetchrow(CHANNEL_SQL, name)
    if row is None or row["provider"] is None:
        return None
    return row["provider"], row["registered"]


async def instance_status(
    conn: Conn, name: str, limit: int
) -> tuple[InstanceState | None, list[HistoryEntry]]:
    current = await conn.fetchrow(
        f"SELECT {_INSTANCE_COLUMNS} FROM rm.instance_status WHERE channel = $1", name
    )
    history = [
        HistoryEntry(
            position=r["position"],
            seq=r["seq"],
            status=r["status"],
            raw=r["raw"],
            reason=r["reason"],
            received_at=r["received_at"],
            provider_time=r["provider_time"],
            event=event_link(r["position"]),
        )
        for r in await conn.fetch(HISTORY_SQL, name, limit)
    ]
    return (_instance(current) if current else None), history


# -- messages ------------------------------------------------------------------------------

_SUMMARY_COLUMNS = (
    "channel, key, provider, direction, state, state_at, kind, chat, sender, text,"
    " first_position, first_seen_at, last_seen_at, sent_due_at, delivered_due_at,"
    " missed_sent, missed_delivered"
)


class MessageFilter(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    now: dt.datetime
    state: str | None = None
    direction: str | None = None
    overdue: bool | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    after: tuple[int, str] | None = None
    limit: int = 50


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
    if f.overdue is not None:
        now = arg(f.now)
        due = (
            f"((state = 'sending' AND sent_due_at <= {now})"
            f" OR (state = 'sent' AND delivered_due_at <= {now}))"
        )
        where.append(due if f.overdue else f"NOT coalesce({due}, false)")
    if f.since is not None:
        where.append(f"first_seen_at >= {arg(f.since)}")
    if f.until is not None:
        where.append(f"first_seen_at < {arg(f.until)}")
    if f.after is not None:
        position, key = arg(f.after[0]), arg(f.after[1])
        where.append(
            f"first_position <= {position} AND (first_position < {position} OR key > {key})"
        )
    sql = (
        f"SELECT {_SUMMARY_COLUMNS} FROM rm.messages WHERE {' AND '.join(where)}"
        f" ORDER BY first_position DESC, key LIMIT {arg(f.limit + 1)}"
    )
    return sql, args


async def messages(conn: Conn, f: MessageFilter) -> tuple[list[MessageSummary], bool]:
    """A page of messages, and whether more follow."""
    sql, args = list_messages_sql(f)
    rows = await conn.fetch(sql, *args)
    items = [
        MessageSummary(
            channel=r["channel"],
            message_id=r["key"],
            provider=r["provider"],
            direction=r["direction"],
            state=r["state"],
            state_at=r["state_at"],
            kind=r["kind"],
            chat=r["chat"],
            sender=r["sender"],
            text=r["text"],
            first_position=r["first_position"],
            first_seen_at=r["first_seen_at"],
            last_seen_at=r["last_seen_at"],
            overdue=overdue_for(r, f.now) is not None,
            missed_sent=r["missed_sent"],
            missed_delivered=r["missed_delivered"],
            link=message_link(r["channel"], r["key"]),
        )
        for r in rows[: f.limit]
    ]
    return items, len(rows) > f.limit


MESSAGE_SQL = (
    "SELECT provider, direction, state, state_at, milestones::text AS milestones,"
    " failures::text AS failures, chat, sender, kind, text, media, quoted, derived_key,"
    " first_position, last_position, first_seen_at, last_seen_at, sent_due_at, sent_by,"
    " missed_sent, delivered_due_at, delivered_by, missed_delivered"
    " FROM rm.messages WHERE channel = $1 AND key = $2"
)
RECEIPTS_SQL = (
    "SELECT participant, state, milestones::text AS milestones FROM rm.receipts"
    " WHERE channel = $1 AND key = $2 ORDER BY participant"
)
TIMELINE_SQL = (
    "SELECT position, seq, received_at, provider_time, fact, status, raw, participant,"
    " error_code, error_text, advanced, duplicate_of FROM rm.timeline"
    " WHERE channel = $1 AND key = $2 ORDER BY position, seq LIMIT $3"
)


def _milestone_out(raw: str) -> dict[str, MilestoneOut]:
    """Milestones in the order a message goes through them (jsonb keeps no order)."""
    milestones = _milestones.decode(raw)
    return {
        status: MilestoneOut(
            at=m.at, position=m.position, provider_time=m.pt, event=event_link(m.position)
        )
        for status, m in sorted(milestones.items(), key=lambda i: (_ORDER.get(i[0], 99), i[0]))
    }


async def message(
    conn: asyncpg.Connection, channel: str, key: str, now: dt.datetime
) -> MessageDetail | None:
    """The message, its receipts and its timeline, read from one snapshot so they agree."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(MESSAGE_SQL, channel, key)
        if row is None:
            return None
        receipts = await conn.fetch(RECEIPTS_SQL, channel, key)
        timeline = await conn.fetch(TIMELINE_SQL, channel, key, TIMELINE_LIMIT + 1)
    due = overdue_for(row, now)
    return MessageDetail(
        channel=channel,
        message_id=key,
        provider=row["provider"],
        direction=row["direction"],
        state=row["state"],
        state_at=row["state_at"],
        milestones=_milestone_out(row["milestones"]),
        failures=[
            FailureOut(
                raw=f.raw,
                code=f.code,
                text=f.text,
                at=f.at,
                position=f.position,
                provider_time=f.pt,
                event=event_link(f.position),
            )
            for f in _failures.decode(row["failures"])
        ],
        content=Content(
            chat=row["chat"],
            sender=row["sender"],
            kind=row["kind"],
            text=row["text"],
            media=row["media"],
            quoted=row["quoted"],
            derived_key=row["derived_key"],
        ),
        missed_acks=MissedAcks(
            sent_due_at=row["sent_due_at"],
            sent_by=row["sent_by"],
            missed_sent=row["missed_sent"],
            delivered_due_at=row["delivered_due_at"],
            delivered_by=row["delivered_by"],
            missed_delivered=row["missed_delivered"],
            overdue=due is not None,
            overdue_for=due,
        ),
        first_position=row["first_position"],
        last_position=row["last_position"],
        first_seen_at=row["first_seen_at"],
        last_seen_at=row["last_seen_at"],
        receipts=[
            Receipt(
                participant=r["participant"],
                state=r["state"],
                milestones=_milestone_out(r["milestones"]),
            )
            for r in receipts
        ],
        timeline=[
            TimelineEntry(
                position=t["position"],
                seq=t["seq"],
                received_at=t["received_at"],
                provider_time=t["provider_time"],
                fact=t["fact"],
                status=t["status"],
                raw=t["raw"],
                participant=t["participant"],
                error_code=t["error_code"],
                error_text=t["error_text"],
                advanced=t["advanced"],
                duplicate_of=t["duplicate_of"],
                event=event_link(t["position"]),
            )
            for t in timeline[:TIMELINE_LIMIT]
        ],
        timeline_truncated=len(timeline) > TIMELINE_LIMIT,
    )


# -- quarantine ----------------------------------------------------------------------------


def quarantine_sql(channel: str | None) -> str:
    where = "position > $1" + (" AND channel = $3" if channel is not None else "")
    return (
        "SELECT position, channel, provider, reason, received_at FROM rm.quarantine"
        f" WHERE {where} ORDER BY position LIMIT $2"
    )


async def quarantine(
    conn: Conn, after: int, limit: int, channel: str | None
) -> tuple[list[QuarantineEntry], bool]:
    args: list[object] = [after, limit + 1] + ([channel] if channel is not None else [])
    rows = await conn.fetch(quarantine_sql(channel), *args)
    items = [
        QuarantineEntry(
            position=r["position"],
            channel=r["channel"],
            provider=r["provider"],
            reason=r["reason"],
            received_at=r["received_at"],
            event=event_link(r["position"]),
        )
        for r in rows[:limit]
    ]
    return items, len(rows) > limit
