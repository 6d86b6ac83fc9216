"""Fold a batch of stored events into read-model changes (pure: no I/O, no clock).

The runner loads the current rows of the messages a batch touches, calls :func:`fold`, and
writes what comes back in the same transaction as the checkpoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import msgspec

from eventstore.events import StoredEvent
from projections import providers
from projections.facts import (
    RANK,
    DecodeError,
    Fact,
    Ignored,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    StatusReported,
)
from projections.message_state import MessageState, Report

Key = tuple[str, str]
ReceiptKey = tuple[str, str, str]


class Deadlines(msgspec.Struct, frozen=True):
    sent: dt.timedelta = dt.timedelta(seconds=60)
    delivered: dt.timedelta = dt.timedelta(seconds=600)


DEFAULT_DEADLINES = Deadlines()


class Decoded(msgspec.Struct, frozen=True):
    event: StoredEvent
    facts: list[Fact]
    error: str | None = None


class TimelineRow(msgspec.Struct, frozen=True, array_like=True):
    channel: str
    key: str
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


class InstanceRow(msgspec.Struct, frozen=True, array_like=True):
    channel: str
    position: int
    seq: int
    status: str
    raw: str
    reason: str | None
    received_at: dt.datetime
    provider_time: float | None
    provider: str


class QuarantineRow(msgspec.Struct, frozen=True, array_like=True):
    position: int
    channel: str
    provider: str
    reason: str
    received_at: dt.datetime


class MissedAcks(msgspec.Struct, kw_only=True):
    """Deadline bookkeeping of one message, derived from its milestones and its channel."""

    sent_due_at: dt.datetime | None = None
    sent_by: dt.datetime | None = None
    missed_sent: bool = False
    delivered_due_at: dt.datetime | None = None
    delivered_by: dt.datetime | None = None
    missed_delivered: bool = False


class Batch(msgspec.Struct, kw_only=True):
    """Everything one batch changes."""

    messages: dict[Key, MessageState]
    missed: dict[Key, MissedAcks]
    receipts: dict[ReceiptKey, MessageState]
    timeline: list[TimelineRow]
    instances: list[InstanceRow]
    quarantine: list[QuarantineRow]
    #: (provider, channel, state) for each message whose state changed in this batch
    transitions: list[tuple[str, str, str]]
    #: (provider, channel, stage, seconds) for each first ack of a message we saw sent
    ack_latencies: list[tuple[str, str, str, float]]
    #: (channel, stage) for each message that newly missed a deadline
    newly_missed: list[tuple[str, str]]
    #: (provider, reason class) per quarantined event; (provider, "ok") per folded one
    outcomes: list[tuple[str, str]]


def decode(events: Iterable[StoredEvent]) -> list[Decoded]:
    out = []
    for event in events:
        try:
            facts = providers.decode(
                event.provider, event.body, event.content_type, event.headers or {}
            )
        except DecodeError as exc:
            out.append(Decoded(event, [], exc.reason))
        else:
            out.append(Decoded(event, facts))
    return out


def message_keys(decoded: Iterable[Decoded]) -> tuple[set[Key], set[ReceiptKey]]:
    keys: set[Key] = set()
    receipts: set[ReceiptKey] = set()
    for d in decoded:
        for fact in d.facts:
            if isinstance(fact, MessageObserved | StatusReported | MessageDeleted):
                keys.add((d.event.channel, fact.key))
            if isinstance(fact, StatusReported) and fact.participant:
                receipts.add((d.event.channel, fact.key, fact.participant))
    return keys, receipts


#: every value ``reason_class`` returns (metrics export them at zero from start-up)
REASON_CLASSES = (
    "invalid_json",
    "unknown_provider",
    "decoder_bug",
    "too_deep",
    "invalid_form",
    "invalid_payload",
)


def reason_class(reason: str) -> str:
    """A bounded label for a quarantine reason (metrics must never carry free text)."""
    if reason.startswith("body is not valid JSON"):
        return "invalid_json"
    if reason.startswith("no decoder"):
        return "unknown_provider"
    if reason.startswith("decoder error"):
        return "decoder_bug"
    if "nested too deeply" in reason:
        return "too_deep"
    if "form body" in reason:
        return "invalid_form"
    return "invalid_payload"


def _first_reached(state: MessageState, rank: int) -> dt.datetime | None:
    times = [m.at for s, m in state.milestones.items() if RANK.get(s, -1) >= rank]
    return min(times) if times else None


def missed_acks(state: MessageState, deadlines: Deadlines, previous: MissedAcks) -> MissedAcks:
    """Deadlines run on our clock from the report that started each wait (invariant 7).

    A deadline counts as missed when the awaited ack came after it (a late ack); the sweep
    marks the ones still waiting when it passes. Once missed, always missed.
    """
    if state.direction != "outgoing":
        return previous
    sending = state.milestones.get("sending")
    sent = state.milestones.get("sent")
    out = MissedAcks(
        sent_due_at=sending.at + deadlines.sent if sending else None,
        sent_by=_first_reached(state, RANK["sent"]),
        delivered_due_at=sent.at + deadlines.delivered if sent else None,
        delivered_by=_first_reached(state, RANK["not_sent"]),
    )
    out.missed_sent = previous.missed_sent or (
        out.sent_due_at is not None and out.sent_by is not None and out.sent_by > out.sent_due_at
    )
    out.missed_delivered = previous.missed_delivered or (
        out.delivered_due_at is not None
        and out.delivered_by is not None
        and out.delivered_by > out.delivered_due_at
    )
    return out


def fold(
    decoded: list[Decoded],
    existing: Mapping[Key, MessageState],
    existing_missed: Mapping[Key, MissedAcks],
    existing_receipts: Mapping[ReceiptKey, MessageState],
    deadlines: Mapping[str, Deadlines],
) -> Batch:
    messages: dict[Key, MessageState] = {}
    receipts: dict[ReceiptKey, MessageState] = {}
    before: dict[Key, str | None] = {}
    timeline: list[TimelineRow] = []
    instances: list[InstanceRow] = []
    quarantine: list[QuarantineRow] = []
    outcomes: list[tuple[str, str]] = []

    def message(channel: str, key: str, provider: str) -> MessageState:
        k = (channel, key)
        state = messages.get(k)
        if state is None:
            old = existing.get(k)
            before[k] = old.state if old else None
            state = (
                msgspec.structs.replace(old)
                if old
                else MessageState(channel=channel, key=key, provider=provider)
            )
            messages[k] = state
        return state

    for d in decoded:
        ev = d.event
        if d.error is not None:
            quarantine.append(
                QuarantineRow(ev.position, ev.channel, ev.provider, d.error, ev.received_at)
            )
            outcomes.append((ev.provider, reason_class(d.error)))
            continue
        outcomes.append((ev.provider, "ok"))
        for seq, fact in enumerate(d.facts):
            if isinstance(fact, Ignored):
                continue
            if isinstance(fact, InstanceStatusReported):
                instances.append(
                    InstanceRow(
                        ev.channel,
                        ev.position,
                        seq,
                        fact.status,
                        fact.raw,
                        fact.reason,
                        ev.received_at,
                        fact.provider_time,
                        ev.provider,
                    )
                )
                continue
            state = message(ev.channel, fact.key, ev.provider)
            participant: str | None = None
            code: str | None = None
            text: str | None = None
            kind: str
            status: str
            raw: str
            if isinstance(fact, MessageObserved):
                advanced = state.observe(
                    direction=fact.direction,
                    at=ev.received_at,
                    position=ev.position,
                    pt=fact.provider_time,
                    chat=fact.chat,
                    sender=fact.sender,
                    kind=fact.kind,
                    text=fact.text,
                    media=fact.media,
                    quoted=fact.quoted,
                    derived_key=fact.derived_key,
                )
                kind, raw = "message", fact.direction
                status = "received" if fact.direction == "incoming" else "sending"
            elif isinstance(fact, StatusReported):
                report = Report(
                    status=fact.status,
                    at=ev.received_at,
                    position=ev.position,
                    pt=fact.provider_time,
                    raw=fact.raw,
                    error_code=fact.error_code,
                    error_text=fact.error_text,
                )
                advanced = state.report(report)
                if fact.participant:
                    rk = (ev.channel, fact.key, fact.participant)
                    receipt = receipts.get(rk)
                    if receipt is None:
                        old_receipt = existing_receipts.get(rk)
                        receipt = (
                            msgspec.structs.replace(old_receipt)
                            if old_receipt
                            else MessageState(
                                channel=ev.channel, key=fact.key, provider=ev.provider
                            )
                        )
                        receipts[rk] = receipt
                    receipt.report(report)
                kind, status, raw = "status", fact.status, fact.raw
                participant, code, text = fact.participant, fact.error_code, fact.error_text
            else:  # MessageDeleted
                if fact.direction == "incoming":
                    state.observed_in = True
                elif fact.direction == "outgoing":
                    state.observed_out = True
                advanced = state.report(
                    Report(
                        status="deleted",
                        at=ev.received_at,
                        position=ev.position,
                        pt=fact.provider_time,
                        raw=fact.raw,
                    )
                )
                kind, status, raw = "deleted", "deleted", fact.raw
            timeline.append(
                TimelineRow(
                    ev.channel,
                    fact.key,
                    ev.position,
                    seq,
                    ev.received_at,
                    fact.provider_time,
                    kind,
                    status,
                    raw[:200],
                    participant,
                    code,
                    text,
                    advanced,
                    ev.duplicate_of,
                )
            )

    transitions: list[tuple[str, str, str]] = []
    latencies: list[tuple[str, str, str, float]] = []
    missed: dict[Key, MissedAcks] = {}
    newly_missed: list[tuple[str, str]] = []
    for k, state in messages.items():
        old_state = before[k]
        if state.state != old_state:
            transitions.append((state.provider, state.channel, state.state))
        prev = existing_missed.get(k, MissedAcks())
        now_missed = missed_acks(state, deadlines.get(state.channel, DEFAULT_DEADLINES), prev)
        missed[k] = now_missed
        if now_missed.missed_sent and not prev.missed_sent:
            newly_missed.append((state.channel, "sent"))
        if now_missed.missed_delivered and not prev.missed_delivered:
            newly_missed.append((state.channel, "delivered"))
        old = existing.get(k)
        sending = state.milestones.get("sending")
        if sending is None:
            continue
        for stage in ("sent", "delivered", "read"):
            milestone = state.milestones.get(stage)
            if milestone and (old is None or stage not in old.milestones):
                seconds = (milestone.at - sending.at).total_seconds()
                if seconds >= 0:
                    latencies.append((state.provider, state.channel, stage, seconds))

    return Batch(
        messages=messages,
        missed=missed,
        receipts=receipts,
        timeline=timeline,
        instances=instances,
        quarantine=quarantine,
        transitions=transitions,
        ack_latencies=latencies,
        newly_missed=newly_missed,
        outcomes=outcomes,
    )
