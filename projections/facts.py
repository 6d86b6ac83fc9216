"""Canonical facts: the provider-neutral vocabulary every decoder speaks.

A decoder turns one raw webhook into a list of these. The projector folds them; it never
looks at a provider's payload itself, so a decoder fix plus a rebuild corrects history.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Direction = Literal["incoming", "outgoing"]

#: Statuses an outgoing message can be reported in (``deleted`` is its own fact).
OutgoingStatus = Literal["sending", "sent", "not_sent", "delivered", "read", "played"]

#: Connection states of a provider "instance" (the phone behind a channel).
InstanceStatus = Literal[
    "starting",
    "qr_required",
    "connected",
    "disconnected",
    "logged_out",
    "banned",
    "stopped",
    "unknown",
]

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


class DecodeError(Exception):
    """The one error a decoder may raise: the event cannot be read, and why.

    The reason names the field and what was wrong with it; it is stored in the quarantine.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


class StatusReported(msgspec.Struct, frozen=True, kw_only=True, tag="status"):
    """An ack (or failure) for an outgoing message."""

    key: str
    status: OutgoingStatus
    raw: str
    provider_time: float | None = None
    participant: str | None = None
    error_code: str | None = None
    error_text: str | None = None


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
