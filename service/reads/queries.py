"""The reads of the query API and the console, mapped to bodies: rows → ``reads.models``.

The SQL lives with the tables' owners: ``projections.readmodel.query`` for the read model,
``eventstore.read`` for the log, ``eventstore.channels`` (imported as ``registry``) for the
channel registry. Here a record becomes a body, every ``event`` field becomes a link to its
raw webhook, and a stored event becomes its API form with what its decoder reads in it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import urllib.parse
from typing import TypeAlias

import asyncpg

from eventstore import channels as registry
from eventstore import partitions, read
from eventstore import retention as retention_records
from eventstore.events import StoredEvent
from projections.facts import RANK
from projections.fold import decode_event
from projections.readmodel import health as health_rm
from projections.readmodel import query as readmodel
from projections.readmodel.query import TIMELINE_LIMIT as TIMELINE_LIMIT
from projections.readmodel.query import MessageFilter as MessageFilter
from projections.retention import oldest_of
from projections.rules.health import DEFAULT_SETTINGS
from projections.rules.message_state import ANOMALIES, Anomaly, Milestone
from service.reads.models import (
    ChannelLinks,
    ChannelSummary,
    Content,
    Decoding,
    EventOut,
    FailureOut,
    HealthThresholds,
    HistoryEntry,
    InstanceHealth,
    InstanceState,
    LogStatus,
    MessageDetail,
    MessageSummary,
    MilestoneOut,
    MissedAcksOut,
    QuarantineEntry,
    Receipt,
    ReceiptCounts,
    RetentionRun,
    TimelineEntry,
)

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_ORDER = {"received": -1, **RANK}


def event_link(position: int) -> str:
    return f"/v1/events/{position}"


def channel_link(channel: str) -> str:
    return f"/v1/channels/{urllib.parse.quote(channel, safe='')}"


def message_link(channel: str, key: str) -> str:
    return f"{channel_link(channel)}/messages/{urllib.parse.quote(key, safe='')}"


# -- channels ------------------------------------------------------------------------------


async def health(conn: Conn, now: dt.datetime) -> dict[str, health_rm.ChannelHealth]:
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return await health_rm.channel_health(c, now)
    return await health_rm.channel_health(conn, now)


def health_out(name: str, found: dict[str, health_rm.ChannelHealth]) -> InstanceHealth:
    h = found.get(name) or health_rm.ChannelHealth(
        channel=name,
        provider=None,
        health="unknown",
        status=None,
        debounced_status=None,
        status_since=None,
        changes=0,
        flapping=False,
        silent=None,
        last_out_at=None,
        last_ack_at=None,
        waiting_since=None,
        settings=DEFAULT_SETTINGS,
    )
    s = h.settings
    return InstanceHealth(
        health=h.health,
        status=h.status,
        debounced_status=h.debounced_status,
        status_since=h.status_since,
        changes_in_window=h.changes,
        flapping=h.flapping,
        silent=h.silent,
        last_outgoing_at=h.last_out_at,
        last_ack_at=h.last_ack_at,
        waiting_since=h.waiting_since,
        thresholds=HealthThresholds(
            flap_changes=s.flap_changes,
            flap_window_s=s.flap_window.total_seconds(),
            silent_acks_s=s.silent_acks.total_seconds(),
            silent_traffic_s=s.silent_traffic.total_seconds(),
        ),
    )


def _instance(r: readmodel.InstanceRecord) -> InstanceState:
    return InstanceState(
        status=r.status,
        raw=r.raw,
        reason=r.reason,
        position=r.position,
        received_at=r.received_at,
        provider_time=r.provider_time,
        event=event_link(r.position),
    )


async def channels(conn: Conn, now: dt.datetime) -> list[ChannelSummary]:
    """Registered channels plus those only the log (or the read models) still know."""
    providers = await read.channels(conn)
    registered = await registry.providers(conn)
    providers.update(registered)
    counts = await readmodel.state_counts(conn)
    for name in counts.keys() - providers.keys():  # only once old log partitions are detached
        found = await channel(conn, name)
        providers[name] = found[0] if found else "unknown"
    status = {name: _instance(r) for name, r in (await readmodel.instances(conn)).items()}
    healths = await health(conn, now)
    return [
        ChannelSummary(
            name=name,
            provider=providers[name],
            registered=name in registered,
            connection=status.get(name),
            health=health_out(name, healths),
            messages=counts.get(name, {}),
            total_messages=sum(counts.get(name, {}).values()),
            links=ChannelLinks(
                status=channel_link(name) + "/status", messages=channel_link(name) + "/messages"
            ),
        )
        for name in sorted(providers)
    ]


async def channel(conn: Conn, name: str) -> tuple[str, bool] | None:
    """(provider, registered) of a channel known anywhere, or None.

    The registry first, then the log, then the read model (once old log partitions are
    detached, only the read model may still know a channel).
    """
    provider = await registry.provider(conn, name)
    if provider is not None:
        return provider, True
    provider = await read.channel_provider(conn, name) or await readmodel.channel_provider(
        conn, name
    )
    return (provider, False) if provider is not None else None


async def instance_status(
    conn: Conn, name: str, limit: int
) -> tuple[InstanceState | None, list[HistoryEntry]]:
    current, rows = await readmodel.instance_status(conn, name, limit)
    history = [
        HistoryEntry(
            position=r.position,
            seq=r.seq,
            status=r.status,
            raw=r.raw,
            reason=r.reason,
            received_at=r.received_at,
            provider_time=r.provider_time,
            event=event_link(r.position),
        )
        for r in rows
    ]
    return (_instance(current) if current else None), history


def receipt_counts(
    r: readmodel.MessageSummaryRecord | readmodel.MessageRecord,
) -> ReceiptCounts | None:
    if not r.participants:
        return None
    return ReceiptCounts(
        participants=r.participants,
        delivered_to=r.delivered_to,
        read_by=r.read_by,
        played_by=r.played_by,
    )


# -- messages ------------------------------------------------------------------------------

_ANOMALIES: dict[str, Anomaly] = {a: a for a in ANOMALIES}


def anomalies(names: list[str]) -> list[Anomaly]:
    """The stored names as the API's vocabulary (a name it does not know is left out)."""
    return [_ANOMALIES[n] for n in names if n in _ANOMALIES]


async def messages(conn: Conn, f: MessageFilter) -> tuple[list[MessageSummary], bool]:
    """A page of messages, and whether more follow."""
    rows, more = await readmodel.messages(conn, f)
    items = [
        MessageSummary(
            channel=r.channel,
            message_id=r.key,
            provider=r.provider,
            direction=r.direction,
            state=r.state,
            state_at=r.state_at,
            kind=r.kind,
            chat=r.chat,
            sender=r.sender,
            text=r.text,
            first_position=r.first_position,
            first_seen_at=r.first_seen_at,
            last_seen_at=r.last_seen_at,
            overdue=r.overdue_for is not None,
            missed_sent=r.missed_sent,
            missed_delivered=r.missed_delivered,
            anomalies=anomalies(r.anomalies),
            failure_class=r.failure_class,
            receipt_counts=receipt_counts(r),
            origin=r.origin,
            link=message_link(r.channel, r.key),
        )
        for r in rows
    ]
    return items, more


def _milestone_out(milestones: dict[str, Milestone]) -> dict[str, MilestoneOut]:
    """Milestones in the order a message goes through them (jsonb keeps no order)."""
    return {
        status: MilestoneOut(
            at=m.at, position=m.position, provider_time=m.pt, event=event_link(m.position)
        )
        for status, m in sorted(milestones.items(), key=lambda i: (_ORDER.get(i[0], 99), i[0]))
    }


async def message(
    conn: asyncpg.Connection, channel: str, key: str, now: dt.datetime
) -> MessageDetail | None:
    """The message, its receipts and its timeline (read from one snapshot, so they agree)."""
    row = await readmodel.message(conn, channel, key, now)
    if row is None:
        return None
    x = row.missed
    return MessageDetail(
        channel=channel,
        message_id=key,
        provider=row.provider,
        direction=row.direction,
        state=row.state,
        state_at=row.state_at,
        milestones=_milestone_out(row.milestones),
        failures=[
            FailureOut(
                raw=f.raw,
                code=f.code,
                text=f.text,
                failure_class=f.failure_class,
                at=f.at,
                position=f.position,
                provider_time=f.pt,
                event=event_link(f.position),
            )
            for f in row.failures
        ],
        failure_class=row.failure_class,
        receipt_counts=receipt_counts(row),
        origin=row.origin,
        content=Content(
            chat=row.chat,
            sender=row.sender,
            kind=row.kind,
            text=row.text,
            media=row.media,
            quoted=row.quoted,
            derived_key=row.derived_key,
        ),
        missed_acks=MissedAcksOut(
            sent_due_at=x.sent_due_at,
            sent_by=x.sent_by,
            missed_sent=x.missed_sent,
            delivered_due_at=x.delivered_due_at,
            delivered_by=x.delivered_by,
            missed_delivered=x.missed_delivered,
            overdue=row.overdue_for is not None,
            overdue_for=row.overdue_for,
        ),
        anomalies=anomalies(row.anomalies),
        first_position=row.first_position,
        last_position=row.last_position,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        receipts=[
            Receipt(
                participant=r.participant, state=r.state, milestones=_milestone_out(r.milestones)
            )
            for r in row.receipts
        ],
        timeline=[
            TimelineEntry(
                position=t.position,
                seq=t.seq,
                received_at=t.received_at,
                provider_time=t.provider_time,
                fact=t.fact,
                status=t.status,
                raw=t.raw,
                participant=t.participant,
                error_code=t.error_code,
                error_text=t.error_text,
                advanced=t.advanced,
                duplicate_of=t.duplicate_of,
                event=event_link(t.position),
            )
            for t in row.timeline
        ],
        timeline_truncated=row.timeline_truncated,
    )


# -- quarantine ----------------------------------------------------------------------------


async def quarantine(
    conn: Conn, after: int, limit: int, channel: str | None
) -> tuple[list[QuarantineEntry], bool]:
    rows, more = await readmodel.quarantine(conn, after, limit, channel)
    items = [
        QuarantineEntry(
            position=r.position,
            channel=r.channel,
            provider=r.provider,
            reason=r.reason,
            received_at=r.received_at,
            event=event_link(r.position),
        )
        for r in rows
    ]
    return items, more


# -- raw events ----------------------------------------------------------------------------

#: decode in a worker thread past this many body bytes, so big pages never stall ingest
INLINE_DECODE_BYTES = 256 * 1024


def decoding(event: StoredEvent) -> Decoding:
    """What the projector's decoder makes of a stored event (the same pure function)."""
    d = decode_event(event)
    return Decoding(ok=d.error is None, facts=d.facts, error=d.error)


def event_out(event: StoredEvent) -> EventOut:
    """A stored event as the API shows it: its body as text, or base64 when not UTF-8."""
    try:
        body, encoding = event.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(event.body).decode("ascii"), "base64"
    return EventOut(
        position=event.position,
        received_at=event.received_at,
        channel=event.channel,
        provider=event.provider,
        content_type=event.content_type,
        headers=event.headers or {},
        encoding="utf-8" if encoding == "utf-8" else "base64",
        body=body,
        dedup_key=event.dedup_key,
        duplicate_of=event.duplicate_of,
        decoded=decoding(event),
    )


async def events_out(events: list[StoredEvent]) -> list[EventOut]:
    """Decoders are pure and CPU-bound: big pages decode in a thread."""
    if sum(len(e.body) for e in events) <= INLINE_DECODE_BYTES:
        return [event_out(e) for e in events]
    return await asyncio.to_thread(lambda: [event_out(e) for e in events])


async def log_status(pool: asyncpg.Pool) -> LogStatus:
    """The oldest position kept, the next one, and the latest retention run."""
    async with pool.acquire() as conn:
        parts = await partitions.list_partitions(conn, count=False)
        nxt = await partitions.next_position(conn)
        runs = await retention_records.last_runs(conn, 1)
    last = None
    if runs:
        r = runs[0]
        last = RetentionRun(
            started_at=r.started_at,
            finished_at=r.finished_at,
            outcome=r.outcome,
            error=r.error,
            partitions=r.partitions,
            events=r.rows,
            bytes=r.bytes,
        )
    return LogStatus(
        oldest_position=oldest_of(parts),
        next_position=nxt,
        partitions=sum(1 for p in parts if p.attached),
        last_retention_run=last,
    )


async def dropped(pool: asyncpg.Pool, position: int) -> tuple[int, str | None, str | None] | None:
    """When retention took ``position`` out of the log: the oldest position kept, and the
    archive holding it with its store's URL; else None."""
    held = await retention_records.holding(pool, position)
    if held is None:
        return None
    async with pool.acquire() as conn:
        oldest = oldest_of(await partitions.list_partitions(conn, count=False))
    return oldest, held.archive, held.archive_url
