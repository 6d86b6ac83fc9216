"""Z-API (z-api.io) webhooks → canonical facts.

Z-API POSTs one JSON object per event; ``type`` names the kind:

* ``MessageStatusCallback`` — ``status`` for every id in ``ids[]`` (one callback may cover
  several messages) → one ``StatusReported`` per id. ``RECEIVED`` means *delivered to the
  recipient's device* (naming trap). ``READ_BY_ME`` is our own read of an INCOMING message
  → ``Ignored`` (the incoming machine is only received → deleted).
* ``ReceivedCallback`` — one message, incoming or (with "notify sent by me") our own:
  ``messageId``, ``fromMe``, ``phone`` (chat; groups end in ``-group``), ``participantPhone``
  (group sender), one content object (``text``, ``image``, ``audio``…) → ``MessageObserved``.
  A ``fromMe`` message also carries its status at send time → ``StatusReported`` as well.
* ``DeliveryCallback`` — the message was handed to WhatsApp (NOT device delivery) → ``sent``
  keyed by ``messageId`` (``zaapId`` is Z-API's own id); with an ``error`` → ``not_sent``.
* ``ConnectedCallback`` / ``DisconnectedCallback`` → ``InstanceStatusReported``.
* Anything else (``PresenceChatCallback``, …) → ``Ignored``.

Traps and assumptions:

* ``momment`` (sic) is milliseconds in message callbacks and seconds in DisconnectedCallback;
  ``epoch()`` tells them apart. Some documented examples spell it ``moment``: accepted too.
* The published ConnectedCallback example is not JSON (single quotes, ``,,``) → DecodeError.
* Documented examples repeat keys (``instanceId``, ``thumbnailUrl``); the last one wins. acklog
  stores the raw bytes, so nothing is lost.
* ``notification=REVOKE`` is a deletion: it becomes ``MessageDeleted`` keyed by
  ``referenceMessageId`` when given, else ``messageId`` (Z-API, built on WhatsApp Web, keeps the
  revoked message's id); ``fromMe`` gives the direction. Other notifications (group events,
  missed calls) are ``system`` messages whose text is the notification name.
* Edits (``isEdit``) and poll votes (``pollVote``) are ``Ignored``. ``audio.ptt`` marks a voice
  note. ``referenceMessageId`` is the replied-to message. ``MESSAGE_RECEIVED`` (older docs)
  is read as ``RECEIVED``. An unknown status is Ignored with its value. Z-API has no event id.
* Status callbacks document no per-participant field, so group receipts have no participant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from projections.facts import (
    DecodeError,
    Direction,
    Fact,
    Ignored,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers._common import Stamp, bounded_epoch, parse_json, text_id
from projections.providers.base import Provider
from projections.providers.simulation import Ack, Builder, Failure, Msg, Request, encode, now

#: ``status`` (MessageStatusCallback, ReceivedCallback of our own messages) → canonical status.
STATUS: dict[str, OutgoingStatus] = {
    "PENDING": "sending",
    "SENT": "sent",
    "RECEIVED": "delivered",  # delivered to the recipient's device, despite the name
    "MESSAGE_RECEIVED": "delivered",  # older docs' spelling of RECEIVED
    "READ": "read",
    "PLAYED": "played",
}

#: Statuses that describe INCOMING messages (our side), never an outgoing ack.
INCOMING_RECEIPTS: dict[str, str] = {
    "READ_BY_ME": "READ_BY_ME: our own read of an incoming message",
}


class _Struct(msgspec.Struct, frozen=True, rename="camel"):
    """Z-API spells its fields in camelCase."""


class _Envelope(_Struct, frozen=True):
    type: str | None = None


class _StatusCallback(_Struct, frozen=True):
    status: str | None = None
    ids: list[str] | None = None
    momment: Stamp = None
    moment: Stamp = None


class _DeliveryCallback(_Struct, frozen=True):
    message_id: str | None = None
    error: str | None = None
    momment: Stamp = None
    moment: Stamp = None


class _ConnectedCallback(_Struct, frozen=True):
    connected: bool | None = None
    momment: Stamp = None
    moment: Stamp = None


class _DisconnectedCallback(_Struct, frozen=True):
    error: str | None = None
    momment: Stamp = None
    moment: Stamp = None


class _Text(_Struct, frozen=True):
    message: str | None = None


class _Media(_Struct, frozen=True):
    """Every media object: only the URL field of its own kind is set."""

    image_url: str | None = None
    audio_url: str | None = None
    video_url: str | None = None
    document_url: str | None = None
    sticker_url: str | None = None
    caption: str | None = None
    ptt: bool | None = None


class _Location(_Struct, frozen=True):
    name: str | None = None


class _Contact(_Struct, frozen=True):
    display_name: str | None = None


class _Referenced(_Struct, frozen=True):
    message_id: str | None = None


class _Reaction(_Struct, frozen=True):
    value: str | None = None
    referenced_message: _Referenced | None = None


class _Poll(_Struct, frozen=True):
    question: str | None = None


class _PollVote(_Struct, frozen=True):
    poll_message_id: str | None = None


class _Reply(_Struct, frozen=True):
    """``buttonsResponseMessage`` / ``listResponseMessage``."""

    message: str | None = None


class _Received(_Struct, frozen=True):
    message_id: str | None = None
    phone: str | None = None
    from_me: bool | None = None
    is_group: bool | None = None
    is_edit: bool | None = None
    participant_phone: str | None = None
    connected_phone: str | None = None
    status: str | None = None
    reference_message_id: str | None = None
    notification: str | None = None
    momment: Stamp = None
    moment: Stamp = None
    text: _Text | None = None
    image: _Media | None = None
    audio: _Media | None = None
    video: _Media | None = None
    document: _Media | None = None
    sticker: _Media | None = None
    location: _Location | None = None
    contact: _Contact | None = None
    reaction: _Reaction | None = None
    poll: _Poll | None = None
    poll_vote: _PollVote | None = None
    buttons_response_message: _Reply | None = None
    list_response_message: _Reply | None = None


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one Z-API webhook into canonical facts."""
    kind = parse_json(body, _Envelope).type
    if kind is None or not kind.strip():
        raise DecodeError("invalid_payload", "type: missing event type")
    lowered = kind.lower()
    if lowered == "messagestatuscallback":
        return _statuses(parse_json(body, _StatusCallback), kind)
    if lowered == "receivedcallback":
        return _received(parse_json(body, _Received), kind)
    if lowered == "deliverycallback":
        return [_delivery(parse_json(body, _DeliveryCallback), kind)]
    if lowered == "connectedcallback":
        connected = parse_json(body, _ConnectedCallback)
        return [
            InstanceStatusReported(
                status="disconnected" if connected.connected is False else "connected",
                raw=kind,
                provider_time=_time(connected.momment, connected.moment),
            )
        ]
    if lowered == "disconnectedcallback":
        disconnected = parse_json(body, _DisconnectedCallback)
        return [
            InstanceStatusReported(
                status="disconnected",
                raw=kind,
                reason=disconnected.error or None,
                provider_time=_time(disconnected.momment, disconnected.moment),
            )
        ]
    return [Ignored(reason=f"event type {kind[:64]!r} is not folded", event=kind[:64])]


def _statuses(event: _StatusCallback, kind: str) -> list[Fact]:
    raw = event.status
    if not raw:
        raise DecodeError("invalid_payload", "status: missing")
    if raw in INCOMING_RECEIPTS:
        return [Ignored(reason=INCOMING_RECEIPTS[raw], event=f"{kind}/{raw}")]
    status = STATUS.get(raw)
    if status is None:
        return [Ignored(reason=f"unknown message status {raw[:64]!r}", event=kind)]
    if event.ids is None:
        raise DecodeError("invalid_payload", "ids: missing")
    if not event.ids:
        raise DecodeError("invalid_payload", "ids: empty list, no message to report on")
    when = _time(event.momment, event.moment)
    return [
        StatusReported(key=text_id(mid, f"ids[{i}]"), status=status, raw=raw, provider_time=when)
        for i, mid in enumerate(event.ids)
    ]


def _delivery(event: _DeliveryCallback, kind: str) -> Fact:
    key = text_id(event.message_id, "messageId")
    when = _time(event.momment, event.moment)
    if event.error:
        return StatusReported(
            key=key, status="not_sent", raw=kind, provider_time=when, error_text=event.error
        )
    return StatusReported(key=key, status="sent", raw=kind, provider_time=when)


def _received(event: _Received, kind: str) -> list[Fact]:
    key = text_id(event.message_id, "messageId")
    direction: Direction = "outgoing" if event.from_me else "incoming"
    when = _time(event.momment, event.moment)
    if event.notification == "REVOKE":
        target = text_id(event.reference_message_id or key, "referenceMessageId")
        return [MessageDeleted(key=target, raw="REVOKE", direction=direction, provider_time=when)]
    if event.is_edit:
        return [Ignored(reason="message edit (acklog does not track edits)", event=kind)]
    if event.poll_vote is not None:
        return [Ignored(reason="poll vote", event=f"{kind}/pollVote")]
    content_kind, text, media, quoted = _content(event)
    facts: list[Fact] = [
        MessageObserved(
            key=key,
            direction=direction,
            chat=event.phone or None,
            sender=_sender(event),
            kind=content_kind,
            text=text or None,
            media=media or None,
            quoted=quoted or event.reference_message_id or None,
            provider_time=when,
        )
    ]
    status = STATUS.get(event.status or "") if event.from_me else None
    if status is not None and event.status is not None:
        facts.append(StatusReported(key=key, status=status, raw=event.status, provider_time=when))
    return facts


def _content(event: _Received) -> tuple[str, str | None, str | None, str | None]:
    """(kind, text, media, quoted) from the one content object the callback carries."""
    if event.reaction is not None:
        ref = event.reaction.referenced_message
        return "reaction", event.reaction.value, None, ref.message_id if ref else None
    if event.text is not None:
        return "text", event.text.message, None, None
    media: tuple[tuple[str, _Media | None], ...] = (
        ("image", event.image),
        ("video", event.video),
        ("document", event.document),
        ("sticker", event.sticker),
        ("audio", event.audio),
    )
    for name, item in media:
        if item is not None:
            url = item.image_url or item.video_url or item.document_url or item.sticker_url
            url = url or item.audio_url
            kind = "voice" if name == "audio" and item.ptt else name
            return kind, item.caption, url, None
    if event.location is not None:
        return "location", None, None, None
    if event.contact is not None:
        return "contact", event.contact.display_name, None, None
    if event.poll is not None:
        return "poll", event.poll.question, None, None
    reply = event.buttons_response_message or event.list_response_message
    if reply is not None:
        return "other", reply.message, None, None
    if event.notification:
        return "system", event.notification, None, None
    return "other", None, None, None


def _sender(event: _Received) -> str | None:
    if event.from_me:
        return event.connected_phone or None
    if event.is_group:
        return event.participant_phone or None
    return event.phone or None


def _time(momment: Stamp, moment: Stamp) -> float | None:
    """The event time: ``momment`` (sic, as documented), else the ``moment`` spelling."""
    if momment is not None:
        return bounded_epoch(momment, "momment")
    return bounded_epoch(moment, "moment")


# -- acklog simulate ---------------------------------------------------------------------------

#: our canonical ack → Z-API's status (RECEIVED means delivered to the device)
_SIM_STATUS: dict[Ack, str] = {"sent": "SENT", "delivered": "RECEIVED", "read": "READ"}

#: what production DeliveryCallbacks carry on a failed send (Z-API's docs show no failure)
_SIM_ERROR = "Phone number does not exist"


class Simulator(Builder):
    """Z-API bodies (shapes: shared/samples/zapi/*): ``ReceivedCallback``, ``DeliveryCallback``,
    ``MessageStatusCallback`` and the connect/disconnect callbacks."""

    #: a failed send gets one DeliveryCallback, with ``error``, instead of the plain one
    failure_replaces_outgoing = True
    announced_state = "sent"  # DeliveryCallback: the message reached WhatsApp's servers
    notes = (
        "the failure is a DeliveryCallback with 'error', as seen in production callbacks"
        " (Z-API's docs show no failure)",
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instance_id = self.ids.hex(32)

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.phone_id(), contact=self.ids.phone(), text=self.texts()[0])
        body = encode(
            {
                "isStatusReply": False,
                "senderLid": self.ids.digits(14) + "@lid",
                "connectedPhone": self.me,
                "waitingMessage": False,
                "isEdit": False,
                "isGroup": False,
                "isNewsletter": False,
                "instanceId": self.instance_id,
                "messageId": msg.key,
                "phone": msg.contact,
                "fromMe": False,
                "momment": int(now() * 1000),
                "status": "RECEIVED",
                "chatName": "Simulated Contact",
                "senderPhoto": None,
                "senderName": "Simulated Contact",
                "participantPhone": None,
                "participantLid": None,
                "photo": None,
                "broadcast": False,
                "forwarded": False,
                "type": "ReceivedCallback",
                "fromApi": False,
                "text": {"message": msg.text},
            }
        )
        return msg, Request(body=body, raw="ReceivedCallback")

    def new_outgoing(self) -> Msg:
        return Msg(
            key=self.ids.web_id(),
            contact=self.ids.phone(),
            text=self.texts()[1],
            ref=self.ids.hex(32),
        )

    def _delivery(self, msg: Msg, **extra: Any) -> bytes:
        return encode(
            {
                "phone": msg.contact,
                "zaapId": msg.ref,
                "messageId": msg.key,
                "type": "DeliveryCallback",
                "instanceId": self.instance_id,
                "momment": int(now() * 1000),
                **extra,
            }
        )

    def outgoing(self, msg: Msg) -> Request:
        return Request(body=self._delivery(msg), raw="DeliveryCallback")

    def ack(self, msg: Msg, status: Ack) -> Request:
        body = encode(
            {
                "status": _SIM_STATUS[status],
                "ids": [msg.key],
                "momment": int(now() * 1000),
                "phone": msg.contact,
                "type": "MessageStatusCallback",
                "instanceId": self.instance_id,
            }
        )
        return Request(body=body, raw=f"MessageStatusCallback {_SIM_STATUS[status]}")

    def failure(self, msg: Msg) -> Failure:
        return Failure(
            request=Request(
                body=self._delivery(msg, error=_SIM_ERROR), raw="DeliveryCallback error"
            )
        )

    def instance(self, up: bool) -> Request:
        if up:
            fields: dict[str, Any] = {"type": "ConnectedCallback", "connected": True}
            fields |= {"momment": int(now() * 1000), "phone": self.me}
        else:
            fields = {"momment": int(now()), "error": "Device has been disconnected"}
            fields |= {"disconnected": True, "type": "DisconnectedCallback"}
        body = encode({**fields, "instanceId": self.instance_id})
        return Request(body=body, raw=fields["type"])


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(name="zapi", decode=decode, simulator=Simulator)
