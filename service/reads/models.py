"""The query API's response bodies (the console renders them too), encoded by msgspec.

``service.api.openapi`` builds the published schema from these very classes, so the documented
shapes and the encoded ones cannot drift apart. Every ``event`` field is a link to the raw
webhook (``/v1/events/{position}``) that a fact came from. Bodies are frozen: an answer is
a value, built once and never mutated.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from projections.facts import Fact, InstanceStatus, Origin
from projections.failures import FailureClass
from projections.feed import subscriptions as subs
from projections.rules.deadlines import Stage
from projections.rules.health import Health, Silence
from projections.rules.message_state import Anomaly

Encoding = Literal["utf-8", "base64"]
OverdueFor = Stage


class Error(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx/5xx answer. ``parameter`` names the query or path parameter that was bad."""

    error: str
    detail: str
    parameter: str | None = None
    #: 410 (a position retention took out of the log): it, the oldest position kept, and the
    #: archive that holds it (``acklog archive restore ARCHIVE``)
    position: int | None = None
    oldest_position: int | None = None
    archive: str | None = None
    archive_url: str | None = None


class InstanceState(msgspec.Struct, frozen=True, kw_only=True):
    """The latest connection status a provider reported for the channel's phone instance."""

    status: InstanceStatus
    raw: str
    reason: str | None
    position: int
    received_at: dt.datetime
    provider_time: float | None
    event: str


class HealthThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """The channel's settings (``acklog channels update``), or the defaults."""

    flap_changes: int
    flap_window_s: float
    silent_acks_s: float
    silent_traffic_s: float


class InstanceHealth(msgspec.Struct, frozen=True, kw_only=True):
    """What no provider says directly about the instance, evaluated now (README: Instance
    health). ``health`` is ``flapping`` over ``silent_*`` over ``ok``/``not_connected``."""

    health: Health
    #: the latest status reported, and the one that has held for a minute
    status: str | None
    debounced_status: str | None
    status_since: dt.datetime | None
    #: connection changes within the last ``thresholds.flap_window_s``
    changes_in_window: int
    flapping: bool
    silent: Silence | None
    last_outgoing_at: dt.datetime | None
    last_ack_at: dt.datetime | None
    #: the oldest message sent since the last ack and still waiting for one
    waiting_since: dt.datetime | None
    thresholds: HealthThresholds


class ChannelLinks(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    messages: str


class ChannelSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A channel: registered (in ``channels``) or only known from its events and messages."""

    name: str
    provider: str
    registered: bool
    connection: InstanceState | None
    health: InstanceHealth
    #: message counts by state (``sending``, ``delivered``, ``received``…)
    messages: dict[str, int]
    total_messages: int
    links: ChannelLinks


class ChannelList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ChannelSummary]


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One connection-status report, as it arrived."""

    position: int
    seq: int
    status: InstanceStatus
    raw: str
    reason: str | None
    received_at: dt.datetime
    provider_time: float | None
    event: str


class ChannelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Current connection status and the most recent reports, newest first."""

    channel: str
    provider: str
    registered: bool
    current: InstanceState | None
    health: InstanceHealth
    history: list[HistoryEntry]


class ReceiptCounts(msgspec.Struct, frozen=True, kw_only=True):
    """A group message's receipts: how many participants have each (a read implies
    delivered, a play implies read). The message's ``state`` is the furthest any one got."""

    participants: int
    delivered_to: int
    read_by: int
    played_by: int


class MessageSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One message in a listing; ``link`` leads to its full history."""

    channel: str
    message_id: str
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
    overdue: bool
    missed_sent: bool
    missed_delivered: bool
    #: what the acks say that no provider says directly (README: Anomalies)
    anomalies: list[Anomaly]
    #: the class of the message's first failure (null: none on record)
    failure_class: FailureClass | None
    #: group receipts counted (null: no participant has reported a receipt)
    receipt_counts: ReceiptCounts | None
    #: incoming: ``customer`` or ``system`` (a notice no customer wrote); outgoing: null
    origin: Origin | None
    link: str


class MessagePage(msgspec.Struct, frozen=True, kw_only=True):
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page (null: done)."""

    items: list[MessageSummary]
    next_cursor: str | None


class MilestoneOut(msgspec.Struct, frozen=True, kw_only=True):
    """When a status was first reported: our clock (``at``) and the provider's, if any."""

    at: dt.datetime
    position: int
    provider_time: float | None
    event: str


class FailureOut(msgspec.Struct, frozen=True, kw_only=True):
    """A failure as the provider reported it (``raw``, ``code``, ``text``) and its class."""

    raw: str
    code: str | None
    text: str | None
    failure_class: FailureClass
    at: dt.datetime
    position: int
    provider_time: float | None
    event: str


class Content(msgspec.Struct, frozen=True, kw_only=True):
    chat: str | None
    sender: str | None
    kind: str | None
    text: str | None
    media: str | None
    quoted: str | None
    #: true when the provider sends no id and acklog derived one from the payload
    derived_key: bool


class MissedAcksOut(msgspec.Struct, frozen=True, kw_only=True):
    """The message's ``rules.deadlines.MissedAcks`` on acklog's clock, plus ``overdue``
    evaluated now (``missed_*`` are on record for ever)."""

    sent_due_at: dt.datetime | None
    sent_by: dt.datetime | None
    missed_sent: bool
    delivered_due_at: dt.datetime | None
    delivered_by: dt.datetime | None
    missed_delivered: bool
    overdue: bool
    overdue_for: OverdueFor | None


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """A group member's own acks of the message."""

    participant: str
    state: str
    milestones: dict[str, MilestoneOut]


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One fact about the message, in log order, including those that changed nothing."""

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
    event: str


class MessageDetail(msgspec.Struct, frozen=True, kw_only=True):
    """Everything acklog knows about one message, and the events that taught it."""

    channel: str
    message_id: str
    provider: str
    direction: str
    state: str
    state_at: dt.datetime
    milestones: dict[str, MilestoneOut]
    failures: list[FailureOut]
    #: the class of the message's first failure (null: none on record)
    failure_class: FailureClass | None
    #: group receipts counted (null: no participant has reported a receipt); ``receipts``
    #: lists them per participant
    receipt_counts: ReceiptCounts | None
    #: incoming: ``customer`` or ``system`` (a notice no customer wrote); outgoing: null
    origin: Origin | None
    content: Content
    missed_acks: MissedAcksOut
    #: what the acks say that no provider says directly (README: Anomalies)
    anomalies: list[Anomaly]
    first_position: int
    last_position: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    receipts: list[Receipt]
    timeline: list[TimelineEntry]
    #: true when the timeline was cut at its bound (the newest entries are left out)
    timeline_truncated: bool


class Decoding(msgspec.Struct, frozen=True, kw_only=True):
    """What the provider's decoder makes of the event today (decoders are pure)."""

    ok: bool
    facts: list[Fact]
    error: str | None


class EventOut(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook exactly as received; ``body`` is text when it is UTF-8, else base64."""

    position: int
    received_at: dt.datetime
    channel: str
    provider: str
    content_type: str | None
    headers: dict[str, str]
    encoding: Encoding
    body: str
    dedup_key: str
    duplicate_of: int | None
    decoded: Decoding


class RetentionRun(msgspec.Struct, frozen=True, kw_only=True):
    """One retention run: when, what it freed, how it ended (ok, nothing, failed, running)."""

    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str
    error: str | None
    partitions: int
    events: int
    bytes: int


class LogStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The log's extent: positions below ``oldest_position`` were archived and dropped by
    retention (reading them answers 410 naming their archive)."""

    oldest_position: int
    next_position: int
    partitions: int
    #: the latest retention run (null: none yet)
    last_retention_run: RetentionRun | None


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    """In log order; pass ``next_after`` back as ``after`` for the next page (null: done)."""

    items: list[EventOut]
    next_after: int | None


class QuarantineEntry(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    channel: str
    provider: str
    reason: str
    received_at: dt.datetime
    event: str


class QuarantinePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[QuarantineEntry]
    next_after: int | None


# -- the feed's pages (``/v1/feed/...``) ---------------------------------------------------


class DeadLetterPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[subs.DeadLetter]
    #: pass as ``after`` for the next page; null on the last one
    next_after: int | None


class SubscriptionOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    url: str
    channels: list[str]
    events: list[str]
    status: str
    paused_reason: str | None
    cursor: int
    backlog: int
    recent: list[subs.Attempt]


class SubscriptionList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SubscriptionOut]
