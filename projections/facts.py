"""Canonical facts: the provider-neutral vocabulary every decoder speaks.

A decoder turns one raw webhook into a list of these. The projector folds them; it never
looks at a provider's payload itself, so a decoder fix plus a rebuild corrects history.
"""

from __future__ import annotations

from typing import Literal, assert_never

import msgspec

Direction = Literal["incoming", "outgoing"]

#: Statuses an outgoing message can be reported in (``deleted`` is its own fact).
OutgoingStatus = Literal["sending", "sent", "not_sent", "delivered", "read", "played"]

#: Connection states of a provider "instance" (the phone behind a channel), each in the
#: provider's own sense (the raw value is kept beside it; README "Instance states"):
#:
#: * ``starting`` — coming up, will be usable without action.
#: * ``qr_required`` — must be linked: scan a QR code or enter a pairing code.
#: * ``connected`` — up and sending.
#: * ``suspended`` — session up, sending suspended by WhatsApp for a while (Green-API
#:   ``yellowCard``); not a ban.
#: * ``disconnected`` — link down; the provider reconnects by itself (phone off, network).
#: * ``failed`` — the session broke and stays broken until restarted, or re-linked if a
#:   restart does not help (WAHA ``FAILED``).
#: * ``logged_out`` — unlinked from the phone; a new QR scan is needed.
#: * ``banned`` — WhatsApp refuses the number (Baileys 403, Green-API ``blocked``).
#: * ``stopped`` — stopped on purpose or given up (no more QR attempts); must be started.
#: * ``unknown`` — a state the provider's documentation does not name.
InstanceStatus = Literal[
    "starting",
    "qr_required",
    "connected",
    "suspended",
    "disconnected",
    "failed",
    "logged_out",
    "banned",
    "stopped",
    "unknown",
]
INSTANCE_STATUSES: tuple[InstanceStatus, ...] = InstanceStatus.__args__  # type: ignore[attr-defined]

#: Who wrote an incoming message: a customer, or WhatsApp / the provider ("system": notices
#: such as a changed number or an encryption notice, Meta's ``request_welcome`` when a user
#: opens the chat for the first time). Outgoing messages have no origin.
Origin = Literal["customer", "system"]
ORIGINS: tuple[Origin, ...] = ("customer", "system")
#: message kinds no customer wrote (decoders map each provider's notices onto these)
SYSTEM_KINDS = frozenset({"system", "request_welcome"})


def origin_of(direction: str, kind: str | None) -> Origin | None:
    """The rule, written once: an incoming message of a system kind is ``system``."""
    if direction != "incoming":
        return None
    return "system" if kind in SYSTEM_KINDS else "customer"


#: Rank of every message state; the state is the max rank reported (invariant 5).
RANK: dict[str, int] = {
    "sending": 0,
    "sent": 10,
    "not_sent": 15,
    "delivered": 20,
    "read": 30,
    "played": 40,
    "deleted": 50,
}


#: What a failure means, the same for every provider (``projections.failures.classify``
#: derives it from the provider's code, status or text; docs/failures.md).
FailureClass = Literal[
    "not_on_whatsapp",  # the number has no WhatsApp account (or cannot receive from a business)
    "not_in_group",  # we are not (or no longer) a participant of the group we wrote to
    "outside_window",  # the customer-care window is closed: a template / re-engagement is needed
    "rate_limited",  # throughput, pair, spam or daily limits: retry later, slower
    "frequency_capped",  # Meta chose not to deliver (per-user marketing limit, "ecosystem")
    "opted_out",  # the recipient opted out, unsubscribed or blocked us
    "content_rejected",  # template missing / paused / mismatched, policy, unsupported content
    "media_error",  # media could not be downloaded, uploaded or processed
    "account_restricted",  # our account or number is restricted, locked, banned or flagged
    "payment",  # billing, eligibility payment or price limits
    "configuration",  # credentials, permissions, registration, certificates: our setup
    "invalid_request",  # a parameter is missing or invalid (including "to" = "from")
    "expired",  # the message's time to live ran out before it could be delivered
    "experiment",  # Meta excluded the recipient's number as part of an experiment
    "provider_error",  # the provider (or WhatsApp) failed internally; a retry may succeed
    "unknown",  # no rule knows this code or text (the raw values are kept)
]
FAILURE_CLASSES: tuple[FailureClass, ...] = FailureClass.__args__  # type: ignore[attr-defined]


#: Why an event could not be decoded: a bounded set, used as the quarantine metric's label.
DecodeKind = Literal[
    "invalid_json",  # the body is not JSON at all
    "invalid_form",  # a form body that is not UTF-8 or cannot be parsed
    "invalid_payload",  # well-formed, but not the shape the provider documents
    "too_deep",  # nested beyond what the decoder will follow
    "unknown_provider",  # no decoder for the event's provider
    "decoder_bug",  # the decoder raised something else (caught by the registry's net)
]
DECODE_KINDS: tuple[DecodeKind, ...] = DecodeKind.__args__  # type: ignore[attr-defined]


class DecodeError(Exception):
    """The one error a decoder may raise: the event cannot be read, what kind, and why.

    ``kind`` is bounded (a metric label); ``detail`` names the field and what was wrong
    with it, and is what the quarantine stores as the event's reason.
    """

    def __init__(self, kind: DecodeKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: DecodeKind = kind
        self.detail = detail

    @property
    def reason(self) -> str:
        """The stored sentence (``detail``)."""
        return self.detail


class MessageObserved(msgspec.Struct, frozen=True, kw_only=True, tag="message"):
    """A message was seen (sent by us or received by the instance)."""

    key: str
    direction: Direction
    chat: str | None = None
    sender: str | None = None
    kind: str = "text"
    text: str | None = None
    media: str | None = None
    quoted: str | None = None
    provider_time: float | None = None
    #: True when ``key`` was derived from the payload because the provider sends no id.
    derived_key: bool = False

    @property
    def origin(self) -> Origin | None:
        """``system`` for notices no customer wrote, ``customer`` else; None when outgoing."""
        return origin_of(self.direction, self.kind)


class StatusReported(msgspec.Struct, frozen=True, kw_only=True, tag="status"):
    """An ack (or failure) for an outgoing message."""

    key: str
    status: OutgoingStatus
    raw: str
    provider_time: float | None = None
    participant: str | None = None
    error_code: str | None = None
    error_text: str | None = None
    #: the message's chat when the ack names it (Meta's ``recipient_id``): a message known
    #: only from its statuses can then be found by the number it went to
    chat: str | None = None


class MessageDeleted(msgspec.Struct, frozen=True, kw_only=True, tag="deleted"):
    """A message was deleted (revoked) by either side."""

    key: str
    raw: str
    direction: Direction | None = None
    provider_time: float | None = None


class InstanceStatusReported(msgspec.Struct, frozen=True, kw_only=True, tag="instance"):
    """The provider reported the connection state of the channel's phone instance."""

    status: InstanceStatus
    raw: str
    reason: str | None = None
    provider_time: float | None = None


class Ignored(msgspec.Struct, frozen=True, kw_only=True, tag="ignored"):
    """A well-formed event that carries nothing acklog folds (presence, polls, …)."""

    reason: str
    event: str | None = None


Fact = MessageObserved | StatusReported | MessageDeleted | InstanceStatusReported | Ignored


def describe_fact(fact: Fact) -> str:
    """One line saying what a fact reports (``acklog tail``, the console's event pages)."""
    match fact:
        case MessageObserved():
            direction = "in" if fact.direction == "incoming" else "out"
            derived = " (derived key)" if fact.derived_key else ""
            return f"message {direction} {fact.key}{derived}"
        case StatusReported():
            text = f"status {fact.key} → {fact.status}"
            if fact.participant:
                text += f" [{fact.participant}]"
            error = ": ".join(p for p in (fact.error_code, fact.error_text) if p)
            return text + (f" ({error})" if error else "")
        case MessageDeleted():
            return f"deleted {fact.key}"
        case InstanceStatusReported():
            return f"instance → {fact.status}" + (f" ({fact.reason})" if fact.reason else "")
        case Ignored():
            return f"ignored: {fact.reason}"
        case _:
            assert_never(fact)
