"""Chat API (chat-api.com) webhooks (spec: shared/seeds/chat-api.txt + the courier sample).

One JSON POST per batch: ``{"instanceId", "messages": [...]}`` and/or ``{"instanceId",
"ack": [...]}``; any 200 is the answer. Every element of both arrays is decoded.

* ``messages[]`` → ``MessageObserved`` (direction from ``fromMe``); an outgoing message that
  carries ``ack`` (1 sent, 2 delivered, 3 viewed) also → ``StatusReported``.
* ``ack[]`` → ``StatusReported`` (``status`` is a STRING: sent | delivered | viewed).
* instance status (``statusNotificationsOn``) → ``InstanceStatusReported``.
* anything else (``chatUpdate``, empty arrays) → ``Ignored``.

Traps and assumptions:

* Key = the full serialized ``id`` (``false_<chat>_<hex>``). Its ``true_``/``false_`` prefix is
  NOT trusted for direction: the doc example has ``fromMe: true`` with ``false_``.
* The doc says ACK notifications are generated only for messages we sent (not for incoming ones,
  nor for messages typed on the phone), so every ``ack[]`` entry is an outgoing status. An
  ``ack`` field on an incoming ``messages[]`` entry is Ignored.
* ``viewed`` → ``read``. ``queued`` / ``not sent`` (the API's webhookStatuses vocabulary) are
  mapped too; other values are Ignored, never guessed. ``ack[]`` has no time: provider_time None.
* For media types ``body`` is the file URL (→ ``media``) and ``caption`` the text; for ``chat``,
  ``location`` (``lat;lng``), ``vcard`` and ``call_log`` ``body`` is the text. ``quotedMsgId``
  (present, usually null, in real payloads) is the replied-to id.
* The instance-status example is only an image in the doc; it names the states ``init``,
  ``loading``, ``authenticated`` (substates normal, phone, computer, offline, battery_low,
  syncing). Assumed shape: top-level ``status`` either a string or the API's /status object
  ``{"accountStatus", "statusData": {"substatus"}}``. Substates phone/computer/offline mean the
  phone is not reachable → ``disconnected``; ``got qr code`` → ``qr_required``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from projections.facts import (
    DecodeError,
    Fact,
    Ignored,
    InstanceStatus,
    InstanceStatusReported,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers._common import (
    Id,
    epoch,
    flag_direction,
    folded,
    optional_id,
    parse_json,
    text_id,
)
from projections.providers.base import Provider
from projections.providers.simulation import Ack, Builder, Msg, Request, Step, encode, now

#: ``ack[].status`` and ``messages[].ack`` (as text) → canonical outgoing status.
STATUS: dict[str, OutgoingStatus] = {
    "queued": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "viewed": "read",
    "not sent": "not_sent",
    "1": "sent",
    "2": "delivered",
    "3": "read",
}

#: ``messages[].type`` → canonical kind (anything else: ``other``).
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
    "call_log": "system",
}

#: Kinds whose ``body`` is the file URL rather than text.
_MEDIA_KINDS = frozenset({"image", "video", "audio", "voice", "document", "sticker"})

#: Instance ``accountStatus`` → canonical instance status.
INSTANCE: dict[str, InstanceStatus] = {
    "init": "starting",
    "loading": "starting",
    "got qr code": "qr_required",
    "authenticated": "connected",
}

#: ``authenticated`` substates in which the phone is unreachable.
_OFFLINE_SUBSTATES = frozenset({"phone", "computer", "offline"})


class _Message(msgspec.Struct, frozen=True):
    id: Id = None
    body: str | None = None
    type: str | None = None
    fromMe: bool | int | str | None = None
    author: str | None = None
    chatId: str | None = None
    time: int | float | str | None = None
    caption: str | None = None
    quotedMsgId: Id = None
    ack: int | str | None = None


class _Ack(msgspec.Struct, frozen=True):
    id: Id = None
    status: int | str | None = None


class _StatusData(msgspec.Struct, frozen=True):
    substatus: str | None = None


class _AccountStatus(msgspec.Struct, frozen=True):
    accountStatus: str | None = None
    statusData: _StatusData | None = None


class _Payload(msgspec.Struct, frozen=True):
    messages: list[_Message] | None = None
    ack: list[_Ack] | None = None
    status: str | _AccountStatus | None = None
    chatUpdate: msgspec.Raw = msgspec.Raw()


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one Chat API webhook (every element of ``messages[]`` and ``ack[]``)."""
    payload = parse_json(body, _Payload)
    facts: list[Fact] = []
    for i, msg in enumerate(payload.messages or ()):
        facts.extend(_message(msg, f"messages[{i}]"))
    for i, ack in enumerate(payload.ack or ()):
        facts.append(_ack(ack, f"ack[{i}]"))
    if payload.status is not None:
        facts.append(_instance(payload.status))
    if not facts:
        if len(payload.chatUpdate):
            facts.append(Ignored(reason="chat updates are not folded", event="chatUpdate"))
        else:
            facts.append(Ignored(reason="payload has no messages, acks or instance status"))
    return facts


def _message(msg: _Message, where: str) -> list[Fact]:
    key = text_id(msg.id, f"{where}.id")
    direction = flag_direction(msg.fromMe, f"{where}.fromMe", words=True)
    kind = KIND.get(msg.type or "", "other")
    if kind in _MEDIA_KINDS:
        text, media = msg.caption or None, msg.body or None
    else:
        text, media = msg.body or None, None
    quoted = optional_id(msg.quotedMsgId, f"{where}.quotedMsgId")
    facts: list[Fact] = [
        MessageObserved(
            key=key,
            direction=direction,
            chat=msg.chatId or None,
            sender=msg.author or None,
            kind=kind,
            text=text,
            media=media,
            quoted=quoted,
            provider_time=epoch(msg.time, f"{where}.time"),
        )
    ]
    if msg.ack is None or (isinstance(msg.ack, str) and not msg.ack.strip()):
        return facts
    if direction == "incoming":
        facts.append(Ignored(reason="ack on an incoming message", event="messages"))
        return facts
    facts.append(_status(key, msg.ack, "messages"))
    return facts


def _ack(ack: _Ack, where: str) -> Fact:
    key = text_id(ack.id, f"{where}.id")
    if ack.status is None:
        raise DecodeError("invalid_payload", f"{where}.status: missing")
    return _status(key, ack.status, "ack")


def _status(key: str, value: int | str, event: str) -> Fact:
    raw = str(value).strip()
    status = STATUS.get(raw.lower())
    if status is None:
        return Ignored(reason=f"unknown Chat API ack status {raw[:40]!r}", event=event)
    return StatusReported(key=key, status=status, raw=raw)


def _instance(value: str | _AccountStatus) -> InstanceStatusReported:
    if isinstance(value, str):
        raw, substatus = value, None
    else:
        raw = value.accountStatus or ""
        substatus = value.statusData.substatus if value.statusData is not None else None
    status = INSTANCE.get(folded(raw), "unknown")
    if status == "connected" and (substatus or "").strip().lower() in _OFFLINE_SUBSTATES:
        status = "disconnected"
    return InstanceStatusReported(status=status, raw=raw[:100], reason=substatus or None)


# -- acklog simulate ---------------------------------------------------------------------------

#: our canonical ack → Chat API's ``ack[].status`` (a string; ``viewed`` is read)
_SIM_STATUS: dict[Ack, str] = {"sent": "sent", "delivered": "delivered", "read": "viewed"}


class Simulator(Builder):
    """Chat API bodies (shapes: shared/samples/chatapi/*): batched ``messages[]`` and ``ack[]``,
    plus the instance status (``status``)."""

    cannot: ClassVar[dict[Step, str]] = {
        "failure": "Chat API's webhook documents only sent, delivered and viewed acks",
    }
    notes = (
        "instance status shape assumed ({status: {accountStatus, statusData.substatus}}):"
        " the doc shows it only as an image",
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instance_id = self.ids.digits(5)
        self.numbers: dict[str, int] = {}

    def _message(self, msg: Msg, from_me: bool) -> bytes:
        chat = f"{msg.contact}@c.us"
        self.numbers[msg.key] = self.ids.serial()
        entry = {
            "id": msg.key,
            "body": msg.text,
            "type": "chat",
            "senderName": "acklog" if from_me else "Simulated Contact",
            "fromMe": from_me,
            "self": int(from_me),
            "isForwarded": 0,
            "author": f"{self.me}@c.us" if from_me else chat,
            "time": int(now()),
            "chatId": chat,
            "messageNumber": self.numbers[msg.key],
            "quotedMsgId": None,
        }
        return encode({"instanceId": self.instance_id, "messages": [entry]})

    def incoming(self) -> tuple[Msg, Request]:
        contact = self.ids.phone()
        key = self.ids.serialized(False, f"{contact}@c.us", self.ids.phone_id())
        msg = Msg(key=key, contact=contact, text=self.texts()[0])
        return msg, Request(body=self._message(msg, False), raw="messages[] fromMe=false")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        key = self.ids.serialized(True, f"{contact}@c.us", self.ids.web_id())
        return Msg(key=key, contact=contact, text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        return Request(body=self._message(msg, True), raw="messages[] fromMe=true")

    def ack(self, msg: Msg, status: Ack) -> Request:
        entry = {
            "id": msg.key,
            "messageNumber": self.numbers.get(msg.key, 0),
            "chatId": f"{msg.contact}@c.us",
            "status": _SIM_STATUS[status],
        }
        body = encode({"instanceId": self.instance_id, "ack": [entry]})
        return Request(body=body, raw=f"ack[] {_SIM_STATUS[status]}")

    def instance(self, up: bool) -> Request:
        substatus = "normal" if up else "phone"  # phone: "the phone is not connected"
        status = {"accountStatus": "authenticated", "statusData": {"substatus": substatus}}
        body = encode({"instanceId": self.instance_id, "status": status})
        return Request(body=body, raw=f"authenticated/{substatus}")


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(name="chatapi", decode=decode, simulator=Simulator)
