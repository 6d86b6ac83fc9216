"""WhatsGate webhooks (spec: shared/seeds/whatsgate.txt).

Every event is JSON ``{"id": <event id>, "whatsapp_id", "event_action", "event_date",
"status_code", "event_data"}``. The receiver must answer ``{"result": "OK", "id": <event id>}``
or WhatsGate retries 3 times every 20 s; :func:`event_id` gives that id (and the dedup key).
The message objects are whatsapp-web.js messages (``_id``, serialized ``id``, ``ack``, ``body``,
``type``, ``timestamp``, ``from``, ``to``, ``quoted{}``).

* ``message`` (any incoming message) → ``MessageObserved`` incoming.
* ``create`` (any outgoing message, also those sent from the phone) and ``sent`` (an async send
  went out) → ``MessageObserved`` outgoing + ``StatusReported`` from ``message.ack``.
* ``ack`` (status change) → ``MessageObserved`` outgoing + ``StatusReported``.
* ``ready`` → instance ``connected``; ``disconnect`` → ``disconnected`` (``logged_out``/``banned``
  for whatsapp-web.js logout/ban reasons), ``event_data.reason`` kept.
* ``error`` → ``Ignored`` (the documented payload names no message, so it cannot be folded);
  if it does carry ``event_data.message._id`` → ``StatusReported`` ``not_sent`` with the error.
* any other ``event_action`` → ``Ignored``.

Traps and assumptions:

* Key = ``message._id`` (DESIGN "Message keys"); the serialized ``id``'s ``true_``/``false_``
  prefix is NOT trusted for direction: the doc's ``sent``/``ack`` examples say ``false_`` for our
  own messages. Direction comes from ``event_action``; acks are taken to be about outgoing
  messages (the doc's handler treats them as delivery statuses of what we sent).
* ``ack``: the doc lists 1 sent, 2 delivered, 3 read; -1 (error), 0 (pending) and 4 (played) are
  the whatsapp-web.js values these objects come from and are mapped too. Other values → Ignored.
* A ``sent`` event is itself proof of ``sent``: if its ``ack`` is missing, pending, an error or
  unknown, the status reported is ``sent`` (raw ``"sent"``).
* ``event_date`` is zone-less; the doc example equals ``message.timestamp`` in UTC, so it is read
  as UTC. Status times use ``event_date`` (``message.timestamp`` is the message's creation time);
  message times use ``message.timestamp``, falling back to ``event_date``.
* Groups: ``message.author`` (whatsapp-web.js) is the sender when present; chat = ``from``
  (incoming) or ``to`` (outgoing).
* ``hasMedia``/``mediaKey`` give no URL or media id (``mediaKey`` is a decryption key): ``media``
  stays empty, the kind says what it is. A whatsapp-web.js ``revoked`` message becomes
  ``MessageDeleted``.
* Non-webhook bodies (the receiver's answer ``{"result":"OK","id":18}``, a bare message object)
  have no ``event_action`` → DecodeError; :func:`event_id` returns None for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from projections.facts import (
    DecodeError,
    Direction,
    Fact,
    Ignored,
    InstanceStatus,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers._common import (
    WEBJS_STATE,
    Id,
    Stamp,
    epoch,
    optional_id,
    optional_text,
    parse_json,
    text_id,
)
from projections.providers.base import Provider, Receipt, Reply
from projections.providers.simulation import Ack, Builder, Msg, Request, Step, encode, naive, now

#: ``event_data.message.ack`` (as text) → canonical outgoing status.
STATUS: dict[str, OutgoingStatus] = {
    "-1": "not_sent",
    "0": "sending",
    "1": "sent",
    "2": "delivered",
    "3": "read",
    "4": "played",
}

#: whatsapp-web.js message ``type`` → canonical kind (anything else: ``other``).
KIND: dict[str, str] = {
    "chat": "text",
    "image": "image",
    "video": "video",
    "audio": "audio",
    "ptt": "voice",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "vcard": "contact",
    "multi_vcard": "contact",
    "reaction": "reaction",
    "poll_creation": "poll",
    "call_log": "system",
    "e2e_notification": "system",
    "notification": "system",
    "notification_template": "system",
    "gp2": "system",
    "protocol": "system",
    "broadcast_notification": "system",
}

#: ``disconnect`` reasons (whatsapp-web.js) that mean more than a dropped connection.
#: Its ``WAState`` values are read as WAHA reads them; ``LOGOUT`` is its ``disconnected`` reason.
DISCONNECT: dict[str, InstanceStatus] = {
    "LOGOUT": "logged_out",
    **{
        state: status for state, status in WEBJS_STATE.items() if status in ("logged_out", "banned")
    },
}

_REVOKED = "revoked"
#: A ``sent`` event proves at least this much, whatever its ``ack`` says.
_SENT_OR_LATER: frozenset[OutgoingStatus | None] = frozenset(
    {"sent", "delivered", "read", "played"}
)


class _Head(msgspec.Struct, frozen=True):
    event_action: str


class _EventId(msgspec.Struct, frozen=True):
    id: Id = None
    event_action: str | None = None


class _Quoted(msgspec.Struct, frozen=True):
    id_: Id = msgspec.field(name="_id", default=None)


class _Message(msgspec.Struct, frozen=True):
    id_: Id = msgspec.field(name="_id", default=None)
    ack: int | str | None = None
    body: str | None = None
    type: str | None = None
    timestamp: Stamp = None
    from_: str | None = msgspec.field(name="from", default=None)
    to: str | None = None
    author: str | None = None
    quoted: _Quoted | None = None


class _MessageData(msgspec.Struct, frozen=True):
    message: _Message


class _MessageEvent(msgspec.Struct, frozen=True):
    event_data: _MessageData
    event_date: Stamp = None


class _DisconnectData(msgspec.Struct, frozen=True):
    reason: str | None = None


class _DisconnectEvent(msgspec.Struct, frozen=True):
    event_date: Stamp = None
    event_data: _DisconnectData | None = None


class _ErrorData(msgspec.Struct, frozen=True):
    error: str | None = None
    message: _Message | None = None


class _ErrorEvent(msgspec.Struct, frozen=True):
    event_date: Stamp = None
    status_code: int | str | None = None
    event_data: _ErrorData | None = None


class _ReadyEvent(msgspec.Struct, frozen=True):
    event_date: Stamp = None


def event_id(body: bytes) -> str | None:
    """The envelope ``id`` as a string (WhatsGate wants it echoed), None if not a webhook."""
    try:
        head = parse_json(body, _EventId)
    except DecodeError:
        return None
    if head.event_action is None:
        return None
    return optional_text(head.id)


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one WhatsGate webhook into canonical facts."""
    action = parse_json(body, _Head).event_action
    if action == "message":
        return _message_event(parse_json(body, _MessageEvent), "incoming", action)
    if action in ("create", "sent", "ack"):
        return _message_event(parse_json(body, _MessageEvent), "outgoing", action)
    if action == "ready":
        when = epoch(parse_json(body, _ReadyEvent).event_date, "event_date")
        return [InstanceStatusReported(status="connected", raw=action, provider_time=when)]
    if action == "disconnect":
        return [_disconnect(parse_json(body, _DisconnectEvent))]
    if action == "error":
        return _error(parse_json(body, _ErrorEvent))
    return [Ignored(reason=f"unknown WhatsGate event_action {action[:40]!r}", event=action[:40])]


def _message_event(event: _MessageEvent, direction: Direction, action: str) -> list[Fact]:
    msg = event.event_data.message
    key = text_id(msg.id_, "event_data.message._id")
    status_time = epoch(event.event_date, "event_date")
    if msg.type == _REVOKED:
        return [
            MessageDeleted(key=key, raw=_REVOKED, direction=direction, provider_time=status_time)
        ]
    facts: list[Fact] = [_observed(msg, key, direction, status_time)]
    if direction == "incoming":
        return facts
    if msg.ack is None:
        if action == "ack":
            raise DecodeError("invalid_payload", "event_data.message.ack: missing in an ack event")
        if action == "sent":
            facts.append(
                StatusReported(key=key, status="sent", raw=action, provider_time=status_time)
            )
        return facts
    raw = str(msg.ack).strip()
    status = STATUS.get(raw)
    if action == "sent" and status not in _SENT_OR_LATER:
        status, raw = "sent", action
    if status is None:
        facts.append(Ignored(reason=f"unknown WhatsGate ack value {raw[:20]!r}", event=action))
    else:
        facts.append(StatusReported(key=key, status=status, raw=raw, provider_time=status_time))
    return facts


def _observed(
    msg: _Message, key: str, direction: Direction, event_time: float | None
) -> MessageObserved:
    if direction == "incoming":
        chat, sender = msg.from_, msg.author or msg.from_
    else:
        chat, sender = msg.to, msg.from_
    quoted = None
    if msg.quoted is not None:
        quoted = optional_id(msg.quoted.id_, "event_data.message.quoted._id")
    when = epoch(msg.timestamp, "event_data.message.timestamp")
    return MessageObserved(
        key=key,
        direction=direction,
        chat=chat or None,
        sender=sender or None,
        kind=KIND.get(msg.type or "", "other"),
        text=msg.body or None,
        quoted=quoted,
        provider_time=when if when is not None else event_time,
    )


def _disconnect(event: _DisconnectEvent) -> InstanceStatusReported:
    reason = event.event_data.reason if event.event_data is not None else None
    status = DISCONNECT.get((reason or "").strip().upper(), "disconnected")
    return InstanceStatusReported(
        status=status,
        raw="disconnect",
        reason=reason or None,
        provider_time=epoch(event.event_date, "event_date"),
    )


def _error(event: _ErrorEvent) -> list[Fact]:
    data = event.event_data or _ErrorData()
    text = data.error.strip() if data.error else None
    if data.message is None or data.message.id_ is None:
        detail = f": {text}" if text else ""
        return [Ignored(reason=f"error event names no message{detail}"[:200], event="error")]
    key = text_id(data.message.id_, "event_data.message._id")
    when = epoch(event.event_date, "event_date")
    code = optional_text(event.status_code)
    return [
        _observed(data.message, key, "outgoing", when),
        StatusReported(
            key=key,
            status="not_sent",
            raw="error",
            provider_time=when,
            error_code=code,
            error_text=text or None,
        ),
    ]


# -- answer ------------------------------------------------------------------------------------


def answer(receipt: Receipt) -> Reply:
    """WhatsGate retries until it sees its own event id echoed back (a number stays one)."""
    echoed: int | str | None = receipt.event_id
    if receipt.event_id is not None and receipt.event_id.isdigit():
        echoed = int(receipt.event_id)
    return Reply(msgspec.json.encode({"result": "OK", "id": echoed}))


# -- acklog simulate ---------------------------------------------------------------------------

#: our canonical ack → whatsapp-web.js ``ack`` (the doc lists 1 sent, 2 delivered, 3 read)
_SIM_ACK: dict[Ack, int] = {"sent": 1, "delivered": 2, "read": 3}


class Simulator(Builder):
    """WhatsGate bodies (shapes: shared/samples/whatsgate/*): an envelope with its own event id
    around a whatsapp-web.js message; ``message``, ``create``, ``ack``, ``disconnect``, ``ready``."""

    cannot: ClassVar[dict[Step, str]] = {
        "failure": "WhatsGate's error event names no message (only event_data.error), so no"
        " failure can be tied to one",
    }

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.whatsapp_id = self.ids.hex(11, upper=False)

    def _event(self, action: str, data: dict[str, Any]) -> bytes:
        return encode(
            {
                "id": self.ids.serial(),  # WhatsGate's event id: echoed back, and the dedup key
                "whatsapp_id": self.whatsapp_id,
                "event_action": action,
                "event_date": naive(now()),
                "status_code": None,
                "event_data": data,
            }
        )

    def _message(self, msg: Msg, from_me: bool, ack: int) -> dict[str, Any]:
        me, them = f"{self.me}@c.us", f"{msg.contact}@c.us"
        return {
            "message": {
                "_id": msg.key,
                "id": self.ids.serialized(from_me, them, msg.key),
                "ack": ack,
                "hasMedia": False,
                "mediaKey": "",
                "body": msg.text,
                "type": "chat",
                "timestamp": int(now()),
                "from": me if from_me else them,
                "to": them if from_me else me,
                "isForwarded": False,
            }
        }

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key="3EB0" + self.ids.hex(16), contact=self.ids.phone(), text=self.texts()[0])
        body = self._event("message", self._message(msg, False, 1))
        return msg, Request(body=body, raw="message")

    def new_outgoing(self) -> Msg:
        return Msg(key="3EB0" + self.ids.hex(16), contact=self.ids.phone(), text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        # whatsapp-web.js creates our message PENDING (ack 0); the acks follow
        return Request(body=self._event("create", self._message(msg, True, 0)), raw="create ack=0")

    def ack(self, msg: Msg, status: Ack) -> Request:
        body = self._event("ack", self._message(msg, True, _SIM_ACK[status]))
        return Request(body=body, raw=f"ack ack={_SIM_ACK[status]}")

    def instance(self, up: bool) -> Request:
        if up:
            data = {"pushname": "acklog", "number": self.me, "id": f"{self.me}@c.us"}
            return Request(body=self._event("ready", data), raw="ready")
        body = self._event("disconnect", {"reason": "Client disconnected"})
        return Request(body=body, raw="disconnect")


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(
    name="whatsgate",
    decode=decode,
    event_id=event_id,
    answer=answer,
    simulator=Simulator,
)
