"""The canonical feed's event schema: one format for every provider (version 1).

Each event is a msgspec Struct tagged by ``type``; the same Structs encode what is sent
(webhook body, SSE ``data``) and generate the OpenAPI schema. Every event carries its stable
``id`` (receivers deduplicate on it), the feed ``seq`` (the order), the ``channel`` and
``provider``, and the log ``positions`` it was derived from. A change that is not additive
bumps :data:`VERSION`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import msgspec

from projections.failures import FailureClass

#: schema version of every event body (``version`` field)
VERSION = 1

EventType = Literal[
    "message.state_changed",
    "message.ack_missed",
    "message.anomaly",
    "instance.status_changed",
    "subject.erased",
]
EVENT_TYPES: tuple[EventType, ...] = EventType.__args__  # type: ignore[attr-defined]

#: namespace of the stable event ids (uuid5)
_NAMESPACE = uuid.UUID("6f1c2d4e-8a0b-5c3d-9e7f-a1b2c3d4e5f6")


def event_id(*parts: object) -> str:
    """A stable id: the same parts (type, log position, index…) give the same id."""
    return str(uuid.uuid5(_NAMESPACE, ":".join(str(p) for p in parts)))


class Milestone(msgspec.Struct, frozen=True, kw_only=True):
    """When a state was first reported: our clock and the log position of that report."""

    at: dt.datetime
    position: int


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """A failure reported for a message: the provider's raw status, code and text, and its
    class, the same for every provider (``projections.failures``)."""

    raw: str
    code: str | None = None
    text: str | None = None
    failure_class: FailureClass = "unknown"
    at: dt.datetime
    position: int


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    version: int = VERSION
    seq: int = 0
    #: when the change happened on our clock (the received_at of the event that made it,
    #: or the time the sweep saw a deadline pass)
    timestamp: dt.datetime
    channel: str
    provider: str
    #: the log positions this event was derived from
    positions: list[int]


class MessageStateChanged(_Event, frozen=True, kw_only=True, tag="message.state_changed"):
    """A message's state changed (it never goes backwards; invariant 5)."""

    key: str
    direction: Literal["incoming", "outgoing"]
    #: None for the first sighting of the message
    previous_state: str | None
    state: str
    milestones: dict[str, Milestone]
    failures: list[Failure] = []


class AckMissed(_Event, frozen=True, kw_only=True, tag="message.ack_missed"):
    """An outgoing message missed a deadline: ``sent`` or ``delivered`` came late or never."""

    key: str
    stage: Literal["sent", "delivered"]
    due_at: dt.datetime
    #: the state when the miss was seen (still waiting, or the late ack's state)
    state: str
    #: True when a late ack showed the miss; False when the deadline passed while waiting
    late_ack: bool


class MessageAnomaly(_Event, frozen=True, kw_only=True, tag="message.anomaly"):
    """A message newly shows an anomaly no provider reports directly (``MessageState
    .anomalies``: read without delivered, an ack after a failure, an ack for a message never
    seen, a downgrade suppressed, an ack retried)."""

    key: str
    anomaly: str
    #: every anomaly the message has now
    anomalies: list[str]
    state: str


class InstanceStatusChanged(_Event, frozen=True, kw_only=True, tag="instance.status_changed"):
    """The provider instance (the phone behind a channel) changed connection status."""

    previous_status: str | None
    status: str
    raw: str
    reason: str | None = None


class SubjectErased(_Event, frozen=True, kw_only=True, tag="subject.erased"):
    """One person's phone number was erased (docs/erasure.md): the log events of this channel
    that named it (``positions``) and the feed events sent from them (``masked``, by id) now
    hold zeros in its place. Erase it from what you received too. Carries no personal data."""

    #: the erasure's id in acklog's audit (``erasures``)
    erasure: int
    #: ids of this channel's feed events that were masked
    masked: list[str]


FeedEvent = MessageStateChanged | AckMissed | MessageAnomaly | InstanceStatusChanged | SubjectErased

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FeedEvent)


def encode(event: FeedEvent) -> bytes:
    return _encoder.encode(event)


def decode(body: bytes) -> FeedEvent:
    return _decoder.decode(body)
