"""What a folded batch is: the rows the fold produces and the read-model writer stores, field
for column, and :class:`Batch`, everything one batch changes.

``array_like`` Structs: ``msgspec.structs.astuple`` gives the COPY record directly; the
field order is the column order of the table in ``readmodel.columns`` (a test checks it).
"""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

import msgspec

from projections.rules.deadlines import MissedAcks
from projections.rules.message_state import MessageState

#: a message: (channel, key)
Key = tuple[str, str]
#: a group member's receipt of a message: (channel, key, participant)
ReceiptKey = tuple[str, str, str]


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
    """A row of ``instance_history`` (the first nine fields), then what ``instance_status``
    adds: the provider and the current status run (see ``rules.health``)."""

    channel: str
    position: int
    seq: int
    status: str
    raw: str
    reason: str | None
    received_at: dt.datetime
    provider_time: float | None
    #: the status differs from the channel's previous report (log order)
    changed: bool
    provider: str
    changed_at: dt.datetime
    stable_status: str | None


class ActivityRow(msgspec.Struct, frozen=True, array_like=True):
    """A row of ``channel_activity``."""

    channel: str
    last_out_at: dt.datetime | None
    last_ack_at: dt.datetime | None


class QuarantineRow(msgspec.Struct, frozen=True, array_like=True):
    position: int
    channel: str
    provider: str
    reason: str
    received_at: dt.datetime


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
    #: (provider, decode kind) per quarantined event; (provider, "ok") per folded one
    outcomes: list[tuple[str, str]]
    #: (channel, anomaly, +1 or -1) for each message that gained or lost an anomaly
    anomaly_deltas: list[tuple[str, str, int]] = []
    #: (channel, provider, failure class) for each failure newly on record in this batch
    new_failures: list[tuple[str, str, str]] = []
    #: the keys of ``messages`` that ``existing`` did not hold: rows new to the table
    created: set[Key] = msgspec.field(default_factory=set)
    #: per channel touched: its latest outgoing message and ack in this batch
    activity: list[ActivityRow] = []
    #: (provider, channel, origin) for each message first seen incoming in this batch
    incoming: list[tuple[str, str, str]] = []


class Totals(msgspec.Struct):
    """What a batch adds to the count tables and to ``channel_activity``, summed over many
    batches (a bulk fold writes them once, at its end: see ``projections.bulk``).

    Counts add and activity is a maximum, so totals gathered by shards of the log in any
    order (:meth:`merge`) equal those of one fold of the whole.
    """

    #: (channel, stage) → messages that newly missed that deadline
    missed: dict[tuple[str, str], int] = {}
    #: (channel, anomaly) → messages that gained it minus those that lost it
    anomalies: dict[tuple[str, str], int] = {}
    #: (channel, provider, failure class) → failures newly on record
    failures: dict[tuple[str, str, str], int] = {}
    #: channel → [latest outgoing message, latest ack]
    activity: dict[str, list[dt.datetime | None]] = {}

    def add(self, batch: Batch) -> None:
        for m in batch.newly_missed:
            self.missed[m] = self.missed.get(m, 0) + 1
        for channel, kind, n in batch.anomaly_deltas:
            self.anomalies[channel, kind] = self.anomalies.get((channel, kind), 0) + n
        for f in batch.new_failures:
            self.failures[f] = self.failures.get(f, 0) + 1
        for row in batch.activity:
            self._active(row.channel, row.last_out_at, row.last_ack_at)

    def merge(self, other: Totals) -> None:
        _add(self.missed, other.missed)
        _add(self.anomalies, other.anomalies)
        _add(self.failures, other.failures)
        for channel, (out, ack) in other.activity.items():
            self._active(channel, out, ack)

    def _active(self, channel: str, out: dt.datetime | None, ack: dt.datetime | None) -> None:
        seen = self.activity.setdefault(channel, [None, None])
        for i, at in enumerate((out, ack)):
            if at is not None and (seen[i] is None or at > seen[i]):  # type: ignore[operator]
                seen[i] = at

    def activity_rows(self) -> list[ActivityRow]:
        return [ActivityRow(c, out, ack) for c, (out, ack) in sorted(self.activity.items())]


_K = TypeVar("_K")


def _add(into: dict[_K, int], counts: dict[_K, int]) -> None:
    for k, n in counts.items():
        into[k] = into.get(k, 0) + n
