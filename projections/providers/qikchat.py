"""Qikchat webhooks (spec: shared/seeds/qikchat.txt).

JSON ``{"event": ..., "payload": {...}}``; Qikchat wants a 200 within 2 s and nothing else.
Payloads follow the Meta Cloud API message shapes.

* ``whatsapp:message:in`` — ``payload.id`` (message id) + ``payload.message`` (``from``,
  ``timestamp``, ``type`` and a Meta-style body such as ``text.body`` or ``image{id,url}``)
  → ``MessageObserved`` incoming.
* ``whatsapp:message:status`` — ``payload.id``, ``status``, ``timestamp`` → ``StatusReported``.
* any other ``event`` → ``Ignored``.

Traps and assumptions:

* The published status example is NOT valid JSON (trailing commas after ``timestamp`` and after
  the payload object). It is never repaired: such a body is a DecodeError.
* Status values documented: sent, delivered, read. ``failed`` (→ ``not_sent``) is assumed
  Meta-like; failure details are not documented. Unknown values → Ignored.
* Status events are about messages we sent (Qikchat: "a status change in a message you sent").
* ``media`` = the media ``url`` when given, else its media ``id``; ``text`` = ``text.body``, a
  media ``caption`` or a reaction's emoji; ``quoted`` = ``context.id`` (reply) or the reacted-to
  ``reaction.message_id``. ``audio.voice=true`` → kind ``voice``.
* Timestamps are ISO-8601 UTC strings (epoch numbers are accepted too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import msgspec

from projections.facts import Fact, Ignored, MessageObserved, OutgoingStatus
from projections.providers import meta
from projections.providers._common import (
    Id,
    Stamp,
    epoch,
    optional_id,
    optional_text,
    parse_json,
    table_status,
    text_id,
)
from projections.providers.base import FailureTable, Provider
from projections.providers.simulation import Ack, Builder, Msg, Request, Step, encode, iso, now

#: ``payload.status`` → canonical outgoing status.
STATUS: dict[str, OutgoingStatus] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "not_sent",
}

#: ``payload.message.type`` → canonical kind (anything else: ``other``).
KIND: dict[str, str] = {
    "text": "text",
    "image": "image",
    "video": "video",
    "audio": "audio",
    "voice": "voice",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "contacts": "contact",
    "reaction": "reaction",
    "system": "system",
}


class _Head(msgspec.Struct, frozen=True):
    event: str


class _Text(msgspec.Struct, frozen=True):
    body: str | None = None


class _Media(msgspec.Struct, frozen=True):
    id: Id = None
    url: str | None = None
    caption: str | None = None
    voice: bool | None = None


class _Context(msgspec.Struct, frozen=True):
    id: Id = None


class _Reaction(msgspec.Struct, frozen=True):
    message_id: Id = None
    emoji: str | None = None


class _Message(msgspec.Struct, frozen=True):
    from_: str | int | None = msgspec.field(name="from", default=None)
    timestamp: Stamp = None
    type: str | None = None
    text: _Text | None = None
    image: _Media | None = None
    video: _Media | None = None
    audio: _Media | None = None
    voice: _Media | None = None
    document: _Media | None = None
    sticker: _Media | None = None
    context: _Context | None = None
    reaction: _Reaction | None = None


class _InPayload(msgspec.Struct, frozen=True):
    message: _Message
    id: Id = None


class _InEvent(msgspec.Struct, frozen=True):
    payload: _InPayload


class _StatusPayload(msgspec.Struct, frozen=True):
    id: Id = None
    status: str | None = None
    timestamp: Stamp = None


class _StatusEvent(msgspec.Struct, frozen=True):
    payload: _StatusPayload


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one Qikchat webhook into canonical facts."""
    event = parse_json(body, _Head).event
    if event == "whatsapp:message:in":
        return [_incoming(parse_json(body, _InEvent).payload)]
    if event == "whatsapp:message:status":
        return [_status(parse_json(body, _StatusEvent).payload)]
    return [Ignored(reason=f"unknown Qikchat event {event[:40]!r}", event=event[:40])]


def _incoming(payload: _InPayload) -> MessageObserved:
    key = text_id(payload.id, "payload.id")
    msg = payload.message
    found = _media(msg)
    media_field, media_obj = found if found is not None else ("", None)
    kind = KIND.get((msg.type or "").strip().lower(), "other")
    if kind == "audio" and media_obj is not None and media_obj.voice:
        kind = "voice"
    text = msg.text.body if msg.text is not None else None
    if text is None and media_obj is not None:
        text = media_obj.caption
    if text is None and msg.reaction is not None:
        text = msg.reaction.emoji
    media = None
    if media_obj is not None:
        media = media_obj.url or optional_id(media_obj.id, f"payload.message.{media_field}.id")
    quoted = None
    if msg.context is not None:
        quoted = optional_id(msg.context.id, "payload.message.context.id")
    if quoted is None and msg.reaction is not None:
        quoted = optional_id(msg.reaction.message_id, "payload.message.reaction.message_id")
    sender = optional_text(msg.from_)
    return MessageObserved(
        key=key,
        direction="incoming",
        chat=sender,
        sender=sender,
        kind=kind,
        text=text or None,
        media=media,
        quoted=quoted,
        provider_time=epoch(msg.timestamp, "payload.message.timestamp"),
    )


def _media(msg: _Message) -> tuple[str, _Media] | None:
    """The media object of the message: the one named by ``type``, else the first present."""
    by_type: dict[str, _Media | None] = {
        "image": msg.image,
        "video": msg.video,
        "audio": msg.audio,
        "voice": msg.voice,
        "document": msg.document,
        "sticker": msg.sticker,
    }
    chosen = by_type.get(msg.type or "")
    if chosen is not None:
        return msg.type or "", chosen
    return next(((name, m) for name, m in by_type.items() if m is not None), None)


def _status(payload: _StatusPayload) -> Fact:
    return table_status(
        STATUS,
        text_id(payload.id, "payload.id"),
        payload.status,
        "payload.status",
        stamp=payload.timestamp,
        stamp_field="payload.timestamp",
        unknown="unknown Qikchat status",
        event="whatsapp:message:status",
    )


# -- failure codes (projections.failures.classify) ---------------------------------------------

#: Qikchat is a Meta business solution provider: any code it relays is a Cloud API code
FAILURES = FailureTable(
    meta.FAILURE_CODES, {}, meta.FAILURES.ranges, ("Meta's table (assumption)",)
)


# -- acklog simulate ---------------------------------------------------------------------------


class Simulator(Builder):
    """Qikchat bodies (shapes: shared/samples/qikchat/*): ``whatsapp:message:in`` and
    ``whatsapp:message:status`` (the valid-JSON form of the published example)."""

    cannot: ClassVar[dict[Step, str]] = {
        "outgoing": "Qikchat posts no webhook for the messages you send; the first status"
        " creates the message",
        "failure": "Qikchat documents only sent, delivered and read statuses",
        "instance": "Qikchat sends no instance (connection) events",
    }

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.alnum(25), contact=self.ids.phone(), text=self.texts()[0])
        payload = {
            "id": msg.key,
            "name": "whatsapp",
            "contacts": [{"profile": {"name": "Simulated Contact"}, "to": f"+{self.me}"}],
            "message": {
                "from": msg.contact,
                "timestamp": iso(now()),
                "text": {"body": msg.text},
                "type": "text",
            },
        }
        body = encode({"event": "whatsapp:message:in", "payload": payload})
        return msg, Request(body=body, raw="whatsapp:message:in")

    def new_outgoing(self) -> Msg:
        return Msg(key=self.ids.alnum(25), contact=self.ids.phone(), text=self.texts()[1])

    def ack(self, msg: Msg, status: Ack) -> Request:
        payload = {
            "id": msg.key,
            "name": "whatsapp",
            "from": self.me,
            "to": f"+{msg.contact}",
            "status": status,
            "timestamp": iso(now()),
        }
        body = encode({"event": "whatsapp:message:status", "payload": payload})
        return Request(body=body, raw=f"whatsapp:message:status {status}")


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(name="qikchat", decode=decode, failures=FAILURES, simulator=Simulator)
