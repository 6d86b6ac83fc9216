"""WAMM.chat webhooks (spec: shared/seeds/wamm.txt).

WAMM POSTs JSON ``{"tip": ..., "msg_data": {...}}`` one event at a time, in order, and retries
up to 5 times until it gets an HTTP 200 (any body):

* ``tip=msg`` — a message, incoming (``from_me=0``) or outgoing (``from_me=1``), with its
  current ``state``. → ``MessageObserved``; for an outgoing message also ``StatusReported``.
* ``tip=msg_state`` — a status change: ``msg_id``, ``state``, ``date_upd``. → ``StatusReported``
  (``deleted`` → ``MessageDeleted``).
* any other ``tip`` → ``Ignored`` (the doc's own handler logs unknown tips).

Traps and assumptions:

* ``msg_id`` is an int in ``tip=msg`` and a string in ``tip=msg_state``: normalised to a string.
* The reply field is spelled ``qoute_msg_id`` in the doc (both example and table); the correct
  spelling ``quote_msg_id`` is accepted as a fallback.
* ``state=received`` marks an incoming message (a direction flag, not an outgoing status): on
  ``tip=msg`` it adds nothing, on ``tip=msg_state`` it is Ignored. ``deleted`` is its own fact.
  On an incoming ``tip=msg`` only ``deleted`` adds a fact (our own reading is not folded).
  The doc lists "sending, viewed, received, delivered, deleted, not sent, and others": states not
  in ``STATUS`` are Ignored with the raw value in the reason, never guessed.
* ``date_ins``/``date_upd`` are zone-less ``YYYY-MM-DD HH:MM:SS`` (probably the server's local
  time, which the doc does not state); read as UTC like every naive time. Informative only:
  deadlines run on our clock (invariant 7).
* ``from_me`` is documented as 0/1; ``"0"``/``"1"`` and booleans are accepted too (the doc's PHP
  compares loosely). Anything else is a DecodeError: direction is never guessed.
* ``file_link`` ("file/image/voice") does not say which media it is → kind ``other``.
* Content type is not trusted: the body is always read as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from projections.facts import (
    DecodeError,
    Fact,
    Ignored,
    MessageDeleted,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers._common import (
    Id,
    Stamp,
    epoch,
    flag_direction,
    folded,
    optional_id,
    optional_text,
    parse_json,
    text_id,
)
from projections.providers.base import Provider
from projections.providers.simulation import (
    Ack,
    Builder,
    Failure,
    Msg,
    Request,
    Step,
    encode,
    naive,
    now,
)

#: ``msg_data.state`` → canonical outgoing status (``deleted``/``received`` handled apart).
STATUS: dict[str, OutgoingStatus] = {
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "viewed": "read",
    "not sent": "not_sent",
}

#: ``msg_data.tip_msg`` → canonical message kind.
KIND: dict[str, str] = {
    "textMessage": "text",
    "documentMessage": "document",
    "imageMessage": "image",
    "audioMessage": "audio",
    "videoMessage": "video",
    "location": "location",
    "file_link": "other",
}

_DELETED = "deleted"
_RECEIVED = "received"


class _Head(msgspec.Struct, frozen=True):
    tip: str


class _Msg(msgspec.Struct, frozen=True):
    msg_id: Id = None
    qoute_msg_id: Id = None
    quote_msg_id: Id = None
    from_me: int | bool | str | None = None
    phone_acc: str | int | None = None
    phone: str | int | None = None
    tip_msg: str | None = None
    msg_text: str | None = None
    msg_link: str | None = None
    date_ins: Stamp = None
    state: str | None = None
    senderId: str | int | None = None


class _MsgEvent(msgspec.Struct, frozen=True):
    msg_data: _Msg


class _State(msgspec.Struct, frozen=True):
    msg_id: Id = None
    date_upd: Stamp = None
    state: str | None = None


class _StateEvent(msgspec.Struct, frozen=True):
    msg_data: _State


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one WAMM webhook into canonical facts."""
    tip = parse_json(body, _Head).tip
    if tip == "msg":
        return _message(parse_json(body, _MsgEvent).msg_data)
    if tip == "msg_state":
        return _state(parse_json(body, _StateEvent).msg_data)
    return [Ignored(reason=f"unknown WAMM event tip {tip[:40]!r}", event=tip[:40])]


def _message(msg: _Msg) -> list[Fact]:
    key = text_id(msg.msg_id, "msg_data.msg_id")
    direction = flag_direction(msg.from_me, "msg_data.from_me")
    quoted = optional_id(msg.qoute_msg_id, "msg_data.qoute_msg_id") or optional_id(
        msg.quote_msg_id, "msg_data.quote_msg_id"
    )
    chat = optional_text(msg.phone)
    sender = optional_text(msg.senderId) or (
        chat if direction == "incoming" else optional_text(msg.phone_acc)
    )
    when = epoch(msg.date_ins, "msg_data.date_ins")
    facts: list[Fact] = [
        MessageObserved(
            key=key,
            direction=direction,
            chat=chat,
            sender=sender,
            kind=KIND.get(msg.tip_msg or "", "other"),
            text=msg.msg_text or None,
            media=msg.msg_link or None,
            quoted=quoted,
            provider_time=when,
        )
    ]
    if msg.state is None:
        return facts
    state = folded(msg.state)
    if state == _DELETED:
        facts.append(
            MessageDeleted(key=key, raw=msg.state, direction=direction, provider_time=when)
        )
    elif direction == "outgoing":
        status = STATUS.get(state)
        if status is not None:
            facts.append(StatusReported(key=key, status=status, raw=msg.state, provider_time=when))
        else:
            facts.append(_unmapped(msg.state, "msg"))
    return facts


def _state(data: _State) -> list[Fact]:
    key = text_id(data.msg_id, "msg_data.msg_id")
    if data.state is None or not data.state.strip():
        raise DecodeError("invalid_payload", "msg_data.state: missing status")
    when = epoch(data.date_upd, "msg_data.date_upd")
    state = folded(data.state)
    if state == _DELETED:
        return [MessageDeleted(key=key, raw=data.state, provider_time=when)]
    if state == _RECEIVED:
        return [
            Ignored(
                reason="state 'received' describes an incoming message, not an outgoing ack",
                event="msg_state",
            )
        ]
    status = STATUS.get(state)
    if status is None:
        return [_unmapped(data.state, "msg_state")]
    return [StatusReported(key=key, status=status, raw=data.state, provider_time=when)]


def _unmapped(raw: str, event: str) -> Ignored:
    return Ignored(reason=f"unmapped WAMM state {raw[:40]!r}", event=event)


# -- acklog simulate ---------------------------------------------------------------------------

#: our canonical ack → WAMM's ``state`` wording
_SIM_STATE: dict[Ack, str] = {"sent": "sent", "delivered": "delivered", "read": "viewed"}


class Simulator(Builder):
    """WAMM.chat bodies (shapes: shared/samples/wamm/*): ``tip=msg`` and ``tip=msg_state``."""

    cannot: ClassVar[dict[Step, str]] = {
        "instance": "WAMM.chat sends no instance (connection) events",
    }

    def _msg(self, msg_id: int, from_me: bool, contact: str, text: str, state: str) -> Request:
        data: dict[str, Any] = {
            "msg_id": msg_id,  # an int here, a string in msg_state (as in the doc)
            "qoute_msg_id": None,
            "from_api": int(from_me),
            "from_me": int(from_me),
            "phone_acc": self.me,
            "phone": contact,
            "chat_name": "Simulated Contact",
            "tip_msg": "textMessage",
            "msg_text": text,
            "msg_link": None,
            "date_ins": naive(now()),
            "state": state,
            "senderId": None,
            "senderName": None,
        }
        return Request(body=encode({"tip": "msg", "msg_data": data}), raw=f"tip=msg {state}")

    def incoming(self) -> tuple[Msg, Request]:
        msg_id, text = self.ids.serial(), self.texts()[0]
        msg = Msg(key=str(msg_id), contact=self.ids.phone(), text=text)
        return msg, self._msg(msg_id, False, msg.contact, text, "received")

    def new_outgoing(self) -> Msg:
        return Msg(key=str(self.ids.serial()), contact=self.ids.phone(), text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        return self._msg(int(msg.key), True, msg.contact, msg.text, "sending")

    def _state(self, msg: Msg, state: str) -> Request:
        data = {"msg_id": msg.key, "date_upd": naive(now()), "state": state}
        return Request(
            body=encode({"tip": "msg_state", "msg_data": data}), raw=f"msg_state {state}"
        )

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._state(msg, _SIM_STATE[status])

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._state(msg, "not sent"))


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(name="wamm", decode=decode, simulator=Simulator)
