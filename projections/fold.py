"""Fold a batch of stored events into read-model changes (pure: no I/O, no clock).

The runner loads the current rows of the messages a batch touches, calls :func:`fold`, and
writes what comes back in the same transaction as the checkpoint. Each fact kind has its
own function; :meth:`_Fold.fact` dispatches over the ``Fact`` union with an exhaustive
``match`` ending in ``assert_never``, so ``mypy --strict`` rejects a new fact type that no
function folds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import assert_never

import msgspec

from eventstore.events import StoredEvent
from projections import providers
from projections.facts import (
    DecodeError,
    DecodeKind,
    Fact,
    Ignored,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    StatusReported,
)
from projections.failures import classify
from projections.rules.deadlines import DEFAULT_DEADLINES, Deadlines, MissedAcks, missed_acks
from projections.rules.health import Run, next_run
from projections.rules.message_state import MessageState, Report
from projections.rules.rows import (
    ActivityRow,
    Batch,
    InstanceRow,
    Key,
    QuarantineRow,
    ReceiptKey,
    TimelineRow,
)

__all__ = [
    "DEFAULT_DEADLINES",
    "Batch",
    "Deadlines",
    "Decoded",
    "InstanceRow",
    "Key",
    "MissedAcks",
    "QuarantineRow",
    "ReceiptKey",
    "TimelineRow",
    "decode",
    "decode_event",
    "fold",
    "message_keys",
    "missed_acks",
]


class Decoded(msgspec.Struct, frozen=True):
    event: StoredEvent
    facts: list[Fact]
    #: the stored reason when the event could not be decoded (then ``facts`` is empty)
    error: str | None = None
    #: the bounded kind of that failure (the quarantine metric's label)
    error_kind: DecodeKind | None = None
    #: whether this fold counts the event itself (its outcome, its quarantine row): False
    #: for a shard that folds only some of its message facts (projections.shards)
    counted: bool = True
    #: the indexes in ``facts`` this fold folds (None: all); a fact keeps its index (its
    #: timeline ``seq``) whichever shard folds it
    seqs: tuple[int, ...] | None = None

    def each(self) -> list[tuple[int, Fact]]:
        """``(seq, fact)`` of every fact this fold folds."""
        if self.seqs is None:
            return list(enumerate(self.facts))
        return [(i, self.facts[i]) for i in self.seqs]


def decode_event(event: StoredEvent) -> Decoded:
    """One stored event's facts, or why it cannot be decoded (the projector, the API's
    ``decoded`` field and ``acklog tail`` all decode through here)."""
    try:
        facts = providers.decode(
            event.provider, event.body, event.content_type, event.headers or {}
        )
    except DecodeError as exc:
        return Decoded(event, [], exc.detail, exc.kind)
    return Decoded(event, facts)


def decode(events: Iterable[StoredEvent]) -> list[Decoded]:
    return [decode_event(event) for event in events]


def instance_channels(decoded: Iterable[Decoded]) -> set[str]:
    """Channels whose instance status the batch reports (their runs are loaded first)."""
    return {
        d.event.channel
        for d in decoded
        if any(isinstance(f, InstanceStatusReported) for _, f in d.each())
    }


def message_keys(decoded: Iterable[Decoded]) -> tuple[set[Key], set[ReceiptKey]]:
    keys: set[Key] = set()
    receipts: set[ReceiptKey] = set()
    for d in decoded:
        for _, fact in d.each():
            if isinstance(fact, MessageObserved | StatusReported | MessageDeleted):
                keys.add((d.event.channel, fact.key))
            if isinstance(fact, StatusReported) and fact.participant:
                receipts.add((d.event.channel, fact.key, fact.participant))
    return keys, receipts


class _Fold:
    """The accumulators of one batch, and one method per fact kind."""

    def __init__(
        self,
        existing: Mapping[Key, MessageState],
        existing_receipts: Mapping[ReceiptKey, MessageState],
        runs: Mapping[str, Run],
    ) -> None:
        self.existing = existing
        self.existing_receipts = existing_receipts
        self.runs = dict(runs)
        #: channel → [latest outgoing message, latest ack] (our clock)
        self.activity: dict[str, list[dt.datetime | None]] = {}
        self.messages: dict[Key, MessageState] = {}
        self.receipts: dict[ReceiptKey, MessageState] = {}
        #: each receipt's state before this batch (None: the participant had none)
        self.receipts_before: dict[ReceiptKey, str | None] = {}
        self.before: dict[Key, str | None] = {}
        self.timeline: list[TimelineRow] = []
        self.instances: list[InstanceRow] = []
        self.quarantine: list[QuarantineRow] = []
        self.outcomes: list[tuple[str, str]] = []

    def message(self, channel: str, key: str, provider: str) -> MessageState:
        k = (channel, key)
        state = self.messages.get(k)
        if state is None:
            old = self.existing.get(k)
            self.before[k] = old.state if old else None
            state = (
                msgspec.structs.replace(old)
                if old
                else MessageState(channel=channel, key=key, provider=provider)
            )
            self.messages[k] = state
        return state

    def receipt(self, channel: str, key: str, participant: str, provider: str) -> MessageState:
        rk = (channel, key, participant)
        receipt = self.receipts.get(rk)
        if receipt is None:
            old = self.existing_receipts.get(rk)
            self.receipts_before[rk] = old.state if old is not None else None
            receipt = (
                msgspec.structs.replace(old)
                if old
                else MessageState(channel=channel, key=key, provider=provider)
            )
            self.receipts[rk] = receipt
        return receipt

    def event(self, d: Decoded) -> None:
        ev = d.event
        if not d.counted:
            for seq, fact in d.each():
                self.fact(ev, seq, fact)
            return
        if d.error is not None:
            self.quarantine.append(
                QuarantineRow(ev.position, ev.channel, ev.provider, d.error, ev.received_at)
            )
            self.outcomes.append((ev.provider, d.error_kind or "invalid_payload"))
            return
        self.outcomes.append((ev.provider, "ok"))
        for seq, fact in d.each():
            self.fact(ev, seq, fact)

    def fact(self, ev: StoredEvent, seq: int, fact: Fact) -> None:
        match fact:
            case MessageObserved():
                self.on_message(ev, seq, fact)
            case StatusReported():
                self.on_status(ev, seq, fact)
            case MessageDeleted():
                self.on_deleted(ev, seq, fact)
            case InstanceStatusReported():
                self.on_instance(ev, seq, fact)
            case Ignored():
                pass
            case _:
                assert_never(fact)

    def active(self, ev: StoredEvent, which: int) -> None:
        """The channel sent (0) or got an ack (1) at ``ev.received_at``: keep the latest."""
        seen = self.activity.setdefault(ev.channel, [None, None])
        at = seen[which]
        if at is None or ev.received_at > at:
            seen[which] = ev.received_at

    def on_message(self, ev: StoredEvent, seq: int, fact: MessageObserved) -> None:
        if fact.direction == "outgoing":
            self.active(ev, 0)
        state = self.message(ev.channel, fact.key, ev.provider)
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
        status = "received" if fact.direction == "incoming" else "sending"
        self.line(
            ev, seq, fact.key, fact.provider_time, "message", status, fact.direction, advanced
        )

    def on_status(self, ev: StoredEvent, seq: int, fact: StatusReported) -> None:
        if fact.status != "sending":  # "still pending" is no answer from the network
            self.active(ev, 1)
        state = self.message(ev.channel, fact.key, ev.provider)
        report = Report(
            status=fact.status,
            at=ev.received_at,
            position=ev.position,
            pt=fact.provider_time,
            raw=fact.raw,
            error_code=fact.error_code,
            error_text=fact.error_text,
            failure_class=(
                classify(ev.provider, fact.raw, fact.error_code, fact.error_text)
                if fact.status == "not_sent"
                else "unknown"
            ),
        )
        state.note_chat(fact.chat)
        advanced = state.report(report, own_ack=not fact.participant)
        if fact.participant:
            self.receipt(ev.channel, fact.key, fact.participant, ev.provider).report(report)
        self.line(
            ev,
            seq,
            fact.key,
            fact.provider_time,
            "status",
            fact.status,
            fact.raw,
            advanced,
            participant=fact.participant,
            code=fact.error_code,
            text=fact.error_text,
        )

    def on_deleted(self, ev: StoredEvent, seq: int, fact: MessageDeleted) -> None:
        state = self.message(ev.channel, fact.key, ev.provider)
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
        self.line(ev, seq, fact.key, fact.provider_time, "deleted", "deleted", fact.raw, advanced)

    def on_instance(self, ev: StoredEvent, seq: int, fact: InstanceStatusReported) -> None:
        run, changed = next_run(self.runs.get(ev.channel), fact.status, ev.received_at)
        self.runs[ev.channel] = run
        self.instances.append(
            InstanceRow(
                ev.channel,
                ev.position,
                seq,
                fact.status,
                fact.raw,
                fact.reason,
                ev.received_at,
                fact.provider_time,
                changed,
                ev.provider,
                run.changed_at,
                run.stable_status,
            )
        )

    def line(
        self,
        ev: StoredEvent,
        seq: int,
        key: str,
        provider_time: float | None,
        kind: str,
        status: str,
        raw: str,
        advanced: bool,
        *,
        participant: str | None = None,
        code: str | None = None,
        text: str | None = None,
    ) -> None:
        """The timeline keeps every reported status, including those that changed nothing."""
        self.timeline.append(
            TimelineRow(
                ev.channel,
                key,
                ev.position,
                seq,
                ev.received_at,
                provider_time,
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


def fold(
    decoded: list[Decoded],
    existing: Mapping[Key, MessageState],
    existing_missed: Mapping[Key, MissedAcks],
    existing_receipts: Mapping[ReceiptKey, MessageState],
    deadlines: Mapping[str, Deadlines],
    runs: Mapping[str, Run] | None = None,
) -> Batch:
    """``runs``: the current status run of each channel in :func:`instance_channels`."""
    f = _Fold(existing, existing_receipts, runs or {})
    for d in decoded:
        f.event(d)

    transitions: list[tuple[str, str, str]] = []
    latencies: list[tuple[str, str, str, float]] = []
    missed: dict[Key, MissedAcks] = {}
    newly_missed: list[tuple[str, str]] = []
    anomaly_deltas: list[tuple[str, str, int]] = []
    new_failures: list[tuple[str, str, str]] = []
    incoming: list[tuple[str, str, str]] = []
    for rk, receipt in f.receipts.items():
        f.messages[rk[:2]].count_receipt(f.receipts_before[rk], receipt.state)
    for k, state in f.messages.items():
        anomaly_deltas.extend(_anomaly_deltas(existing.get(k), state))
        old_state = f.before[k]
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
        new_failures.extend(_new_failures(state, old))
        origin = state.origin
        if origin is not None and (old is None or old.origin is None):
            incoming.append((state.provider, state.channel, origin))
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
        messages=f.messages,
        missed=missed,
        receipts=f.receipts,
        timeline=f.timeline,
        instances=f.instances,
        quarantine=f.quarantine,
        transitions=transitions,
        ack_latencies=latencies,
        newly_missed=newly_missed,
        outcomes=f.outcomes,
        anomaly_deltas=anomaly_deltas,
        new_failures=new_failures,
        created={k for k in f.messages if k not in existing},
        activity=[ActivityRow(c, out, ack) for c, (out, ack) in f.activity.items()],
        incoming=incoming,
    )


def _anomaly_deltas(old: MessageState | None, new: MessageState) -> list[tuple[str, str, int]]:
    """What ``anomaly_counts`` gains and loses when ``old`` becomes ``new``."""
    before: set[str] = set(old.anomalies) if old is not None else set()
    after: set[str] = set(new.anomalies)
    return [(new.channel, a, 1) for a in sorted(after - before)] + [
        (new.channel, a, -1) for a in sorted(before - after)
    ]


def _new_failures(state: MessageState, old: MessageState | None) -> list[tuple[str, str, str]]:
    """A failure counts once, when its identity is first on record (any order, any repeats)."""
    if len(state.failures) == (len(old.failures) if old else 0):
        return []
    seen = {f.identity() for f in old.failures} if old else set()
    return [
        (state.channel, state.provider, f.failure_class)
        for f in state.failures
        if f.identity() not in seen
    ]
