"""Twilio (Programmable Messaging, WhatsApp senders) webhooks → canonical facts.

Twilio POSTs ``application/x-www-form-urlencoded`` bodies, one message per request:

* status callbacks: ``MessageSid`` + ``MessageStatus`` (accepted, scheduled, queued, sending,
  sent, delivered, read, undelivered, failed, canceled, partially_delivered) with optional
  ``ErrorCode``/``ErrorMessage`` → ``StatusReported``;
* the incoming-message webhook: ``MessageSid``, ``From``, ``To``, ``Body``, ``NumMedia``,
  ``MediaUrl0``/``MediaContentType0``, ``Latitude``/``Longitude`` and, for WhatsApp,
  ``MessageType`` and ``OriginalRepliedMessageSid`` → ``MessageObserved`` (incoming). It has
  no ``MessageStatus`` (or ``MessageStatus=received``); ``SmsStatus`` is the deprecated alias.

Traps and assumptions:

* No timestamp in any of these callbacks: ``provider_time`` is always None (deadlines run on
  our clock anyway, invariant 7). Callbacks arrive out of order; the fold copes.
* A JSON body is refused with a DecodeError: Messaging webhooks are form-encoded, and the JSON
  products (Event Streams / CloudEvents) have another shape that acklog does not read.
* ``ErrorCode``/``ErrorMessage`` are kept only on failures (``not_sent``).
* ``chat``/``sender`` keep Twilio's address verbatim (``whatsapp:+316…``): the prefix tells
  the channel. Only the first media item (``MediaUrl0``) is kept. Twilio has no event id of its
  own in the body, so there is no ``event_id``.
* An unknown ``MessageStatus`` is Ignored with its value rather than guessed.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from projections.facts import (
    DecodeError,
    Fact,
    Ignored,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers._common import parse_form, text_id

#: ``MessageStatus`` → canonical outgoing status.
STATUS: dict[str, OutgoingStatus] = {
    "accepted": "sending",
    "scheduled": "sending",
    "queued": "sending",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "undelivered": "not_sent",
    "failed": "not_sent",
    "canceled": "not_sent",
}

#: ``MessageStatus`` values of an incoming message (the incoming-message webhook).
INCOMING: frozenset[str] = frozenset({"received", "receiving"})

#: WhatsApp ``MessageType`` → message kind (absent or unknown: inferred from the fields).
KIND: dict[str, str] = {
    "text": "text",
    "image": "image",
    "video": "video",
    "audio": "audio",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "contacts": "contact",
    "reaction": "reaction",
    "button": "other",
    "interactive": "other",
}

#: Media content type family → message kind, for bodies without ``MessageType``.
MEDIA_KIND: dict[str, str] = {"image": "image", "video": "video", "audio": "audio"}


class _Form(msgspec.Struct, frozen=True, rename="pascal"):
    """The form fields acklog reads (Twilio spells them in PascalCase)."""

    message_sid: str | None = None
    sms_sid: str | None = None
    message_status: str | None = None
    sms_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    from_: str | None = msgspec.field(default=None, name="From")
    body: str | None = None
    num_media: str | None = None
    media_url0: str | None = None
    media_content_type0: str | None = None
    latitude: str | None = None
    message_type: str | None = None
    original_replied_message_sid: str | None = None


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one Twilio Messaging webhook into canonical facts."""
    if content_type is not None and "json" in content_type.lower():
        raise DecodeError(
            "invalid_payload",
            f"content type {content_type[:64]!r}: Twilio webhooks are form-encoded",
        )
    if body.lstrip()[:1] in (b"{", b"["):
        raise DecodeError(
            "invalid_payload", "body is JSON: Twilio Messaging webhooks are form-encoded"
        )
    try:
        form = msgspec.convert(parse_form(body), type=_Form)
    except msgspec.ValidationError as exc:  # cannot happen for str fields; stay precise anyway
        raise DecodeError("invalid_payload", f"invalid form: {exc}") from None
    key = text_id(form.message_sid or form.sms_sid, "MessageSid")
    raw = form.message_status or form.sms_status
    if raw is None or raw in INCOMING:
        return [_incoming(form, key)]
    status = STATUS.get(raw)
    if status is None:
        return [Ignored(reason=f"unknown MessageStatus {raw[:64]!r}", event="status")]
    failed = status == "not_sent"
    return [
        StatusReported(
            key=key,
            status=status,
            raw=raw,
            error_code=(form.error_code or None) if failed else None,
            error_text=(form.error_message or None) if failed else None,
        )
    ]


def _incoming(form: _Form, key: str) -> Fact:
    if form.body is None and form.num_media is None and form.media_url0 is None:
        raise DecodeError(
            "invalid_payload",
            "MessageStatus: missing, and no Body/NumMedia/MediaUrl0: "
            "neither a status callback nor an incoming message",
        )
    return MessageObserved(
        key=key,
        direction="incoming",
        chat=form.from_ or None,
        sender=form.from_ or None,
        kind=_kind(form),
        text=form.body or None,
        media=form.media_url0 or None,
        quoted=form.original_replied_message_sid or None,
    )


def _kind(form: _Form) -> str:
    declared = KIND.get((form.message_type or "").lower())
    if declared is not None:
        return declared
    if form.latitude:
        return "location"
    if form.media_url0:
        family = (form.media_content_type0 or "").split("/", 1)[0].lower()
        return MEDIA_KIND.get(family, "document")
    return "text"
