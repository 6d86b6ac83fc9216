"""WhatsAble webhooks (spec: shared/seeds/whatsable.txt).

JSON ``{"event": ..., "data": {...}}``, answered with any 200:

* ``message_status`` — ``data.message_id`` (a Meta wamid), ``data.status``, ``data.timestamp``
  (ISO-8601 UTC) → ``StatusReported``.
* ``incoming_message`` — a conversation snapshot for the contact's latest message
  → ``MessageObserved`` incoming with a DERIVED key (``derived_key=True``).
* any other ``event`` → ``Ignored`` (the doc's own handler logs unknown types).

Message key derivation (incoming messages carry no message id at all)::

    "derived:" + sha256(JSON array [phone_number, f"{user_timestamp_seconds:.3f}",
                                    last_message_of_user or ""]).hexdigest()[:32]

the JSON encoded compactly (``[a,b,c]``, UTF-8, no spaces). These are the fields that identify
one user message and stay equal when WhatsAble retries the same event. Left out on purpose:
``attachment_url`` (may be a re-signed URL on retry; the doc example also shows it on a text
message), ``last_messages``/``conversation_paragraph`` (whole-conversation snapshots),
``bot_timestamp`` (changes with the bot's replies). Consequence: two identical texts from one
number within the same second collapse into one message. No ``phone_number`` or no
``user_timestamp`` → DecodeError (no stable key can be made).

Traps and assumptions:

* ``last_messages`` is a JSON-encoded STRING, not an array; it is not read (the latest user text
  is ``last_message_of_user``). ``last_message_of_bot`` has no id and is not an event of its own.
* ``user_timestamp`` is epoch seconds (ints in the doc); it is the message's provider_time.
* ``attachment_url`` becomes ``media`` only when ``message_type`` is not ``text``; a missing
  ``message_type`` is ``text`` when there is text.
* Status values: only ``delivered`` is shown; ``sent``, ``read``, ``failed`` (→ ``not_sent``) and
  ``played`` are assumed from the Meta Cloud API whose wamids WhatsAble forwards; failure details
  are not documented. Unknown values → Ignored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from typing import ClassVar

import msgspec

from projections.facts import DecodeError, Fact, Ignored, MessageObserved, OutgoingStatus
from projections.providers._common import (
    Stamp,
    epoch,
    optional_text,
    parse_json,
    table_status,
    text_id,
)
from projections.providers.base import Provider
from projections.providers.simulation import Ack, Builder, Msg, Request, Step, encode, iso, now

#: ``data.status`` of ``message_status`` → canonical outgoing status.
STATUS: dict[str, OutgoingStatus] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "played",
    "failed": "not_sent",
}

#: ``data.message_type`` (Meta message types) → canonical kind (anything else: ``other``).
KIND: dict[str, str] = {
    "text": "text",
    "image": "image",
    "audio": "audio",
    "voice": "voice",
    "video": "video",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "contacts": "contact",
    "reaction": "reaction",
}

DERIVED_PREFIX = "derived:"


class _Head(msgspec.Struct, frozen=True):
    event: str


class _Status(msgspec.Struct, frozen=True):
    message_id: int | str | None = None
    status: str | None = None
    timestamp: Stamp = None


class _StatusEvent(msgspec.Struct, frozen=True):
    data: _Status


class _Incoming(msgspec.Struct, frozen=True):
    phone_number: str | int | None = None
    user_timestamp: Stamp = None
    last_message_of_user: str | None = None
    message_type: str | None = None
    attachment_url: str | None = None


class _IncomingEvent(msgspec.Struct, frozen=True):
    data: _Incoming


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one WhatsAble webhook into canonical facts."""
    event = parse_json(body, _Head).event
    if event == "message_status":
        return [_status(parse_json(body, _StatusEvent).data)]
    if event == "incoming_message":
        return [_incoming(parse_json(body, _IncomingEvent).data)]
    return [Ignored(reason=f"unknown WhatsAble event {event[:40]!r}", event=event[:40])]


def _status(data: _Status) -> Fact:
    return table_status(
        STATUS,
        text_id(data.message_id, "data.message_id"),
        data.status,
        "data.status",
        stamp=data.timestamp,
        stamp_field="data.timestamp",
        unknown="unknown WhatsAble status",
        event="message_status",
    )


def derive_key(phone: str, seconds: float, text: str) -> str:
    """The stable key of an incoming message (see the module docstring)."""
    material = msgspec.json.encode([phone, f"{seconds:.3f}", text])
    return DERIVED_PREFIX + hashlib.sha256(material).hexdigest()[:32]


def _incoming(data: _Incoming) -> MessageObserved:
    phone = optional_text(data.phone_number)
    if phone is None:
        raise DecodeError(
            "invalid_payload", "data.phone_number: missing (needed to derive the message key)"
        )
    seconds = epoch(data.user_timestamp, "data.user_timestamp")
    if seconds is None:
        raise DecodeError(
            "invalid_payload", "data.user_timestamp: missing (needed to derive the message key)"
        )
    text = data.last_message_of_user or ""
    kind_raw = (data.message_type or "").strip().lower()
    kind = KIND.get(kind_raw, "other") if kind_raw else ("text" if text else "other")
    return MessageObserved(
        key=derive_key(phone, seconds, text),
        direction="incoming",
        chat=phone,
        sender=phone,
        kind=kind,
        text=text or None,
        media=(data.attachment_url or None) if kind != "text" else None,
        provider_time=seconds,
        derived_key=True,
    )


# -- acklog simulate ---------------------------------------------------------------------------


class Simulator(Builder):
    """WhatsAble bodies (shapes: shared/samples/whatsable/*): ``incoming_message`` (no message id:
    acklog derives one) and ``message_status`` keyed by the Meta wamid WhatsAble forwards."""

    cannot: ClassVar[dict[Step, str]] = {
        "outgoing": "WhatsAble posts no webhook for the messages you send; the first"
        " message_status creates the message",
        "failure": "WhatsAble documents no failure status",
        "instance": "WhatsAble sends no instance (connection) events",
    }
    notes = (
        "only 'delivered' is shown in the doc; 'sent' and 'read' follow the Meta statuses"
        " WhatsAble forwards",
    )

    def incoming(self) -> tuple[Msg, Request]:
        contact, text, at = self.ids.phone(), self.texts()[0], int(now())
        t = dt.datetime.fromtimestamp(at, dt.UTC)
        clock = f"{t.hour % 12 or 12}:{t:%M:%S} {'AM' if t.hour < 12 else 'PM'}"
        last = [{"type": "user", "content": text, "timestamp": iso(at), "content_type": "text"}]
        data = {
            "last_messages": encode(last).decode(),  # a JSON-encoded string, as documented
            "conversation_paragraph": f"User ({clock}): {text}",
            "phone_number": contact,
            "recipient_name": "Simulated Contact",
            "user_id": str(uuid.UUID(int=self.ids.rng.getrandbits(128), version=4)),
            "last_message_of_user": text,
            "last_message_of_bot": "",
            "message_type": "text",
            "user_timestamp": at,
            "bot_timestamp": at,
        }
        msg = Msg(key=derive_key(contact, float(at), text), contact=contact, text=text)
        body = encode({"event": "incoming_message", "data": data})
        return msg, Request(body=body, raw="incoming_message")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        return Msg(key=self.ids.wamid(contact), contact=contact, text=self.texts()[1])

    def ack(self, msg: Msg, status: Ack) -> Request:
        data = {"message_id": msg.key, "status": status, "timestamp": iso(now())}
        body = encode({"event": "message_status", "data": data})
        return Request(body=body, raw=f"message_status {status}")


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(name="whatsable", decode=decode, simulator=Simulator)
