"""Evolution API (Baileys and WhatsApp Business channels) webhooks → canonical facts.

Evolution POSTs one event per request: ``{"event", "instance", "data", "destination",
"date_time", "sender" (our own JID), "server_url", "apikey"}``. Event names come dotted
(``messages.upsert``) or upper-underscore (``MESSAGES_UPSERT``) depending on the version; both
are accepted.

* ``messages.upsert`` / ``send.message`` → ``MessageObserved`` keyed by ``data.key.id``;
  ``key.fromMe=true`` is OUR message and, when it carries ``status``, also a ``StatusReported``.
  A ``protocolMessage`` REVOKE → ``MessageDeleted`` of ``protocolMessage.key.id``.
* ``messages.update`` → ``StatusReported`` keyed by ``data.keyId`` (v2; ``messageId`` is
  Evolution's own database id, not the message key) or ``data.id`` (v1.x spreads the Baileys key
  into ``data``: ``{id, remoteJid, fromMe, participant?, status, datetime, owner}``);
  ``DELETED`` → ``MessageDeleted``.
* ``messages.delete`` (``data`` = the Baileys key) → ``MessageDeleted``.
* ``connection.update`` → ``InstanceStatusReported``: open→connected, connecting→starting,
  close→disconnected (``statusReason`` 401 → logged_out, 403 → banned), refused→stopped.
  ``qrcode.updated`` with a QR code → qr_required; ``logout.instance`` → logged_out.
* ``status.instance`` ``closed`` — Evolution gave up reconnecting: v1.x sends it only after a
  ``loggedOut`` close and without a code → logged_out; v2 adds ``disconnectionReasonCode``
  (401 logged_out, 403 banned, the other codes it will not reconnect — 402, 406 — stopped).
  Other ``status.instance`` values (``created``) → ``Ignored``.
* Anything else (``messages.set`` history sync, edits, contacts, chats, presence, groups,
  labels, calls, …) → ``Ignored``.

Traps and assumptions:

* ``status`` is a string (ERROR, PENDING, SERVER_ACK, DELIVERY_ACK, READ, PLAYED, DELETED; the
  Cloud API channel sends Meta's statuses upper-cased: SENT, DELIVERED, FAILED) or a Baileys int
  (0 ERROR … 5 PLAYED: +1 against whatsapp-web.js). ERROR/FAILED → not_sent (no error detail).
* Statuses of ``fromMe=false`` messages are our own receipts of incoming messages → ``Ignored``;
  a ``DELETED`` of one is still a deletion (direction incoming). Missing ``fromMe`` on an update
  is taken as ours (an ack for a message never seen creates an outgoing message).
* The Cloud API channel (v1.8 and v2) sets ``fromMe`` to ``phoneNumber ===
  metadata.phone_number_id`` — a JID against a numeric id, so always false — although Meta sends
  statuses only of the business's own messages. Its own status names (SENT, DELIVERED, FAILED;
  never sent by Baileys) are therefore ours whatever ``fromMe`` says. Its READ cannot be told
  from a Baileys read receipt of an incoming message and stays ignored when ``fromMe=false``.
* ``messages.update`` without ``status`` is a poll vote or content update → ``Ignored`` (a
  deletion always arrives as ``messages.delete`` or an explicit ``DELETED``).
* ``participant`` in ``messages.update`` is a copy of ``remoteJid`` in current versions; it is
  reported only when it names someone else.
* ``refused`` = the QR-code attempts ran out and Evolution ended the session: it needs a manual
  reconnect, hence ``stopped``. ``close`` with Baileys ``DisconnectReason.forbidden`` (403: WhatsApp
  refuses the account) is a ban; 401 (``loggedOut``) a logout; other codes (408 lost, 428
  closed, 440 replaced, 500 bad session, 515 restart required) a plain disconnect that
  Evolution reconnects by itself. The raw state and ``statusReason`` are kept.
* ``messages.set`` (history sync) is ignored: it replays old messages, which would look like
  outgoing messages stuck in ``sending``. ``provider_time`` of a message is its
  ``messageTimestamp`` (seconds, possibly a protobuf Long); of a status, ``datetime`` (ms) or
  the envelope ``date_time``. Evolution has no event id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

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
    BAILEYS_CLOSE,
    BAILEYS_CONNECTION,
    BAILEYS_KIND,
    MAX_INT_BITS,
    Id,
    Stamp,
    baileys_state,
    bool_direction,
    bounded_epoch,
    bounded_id,
    guard_int,
    parse_json,
    parse_part,
)

#: ``data.status`` (names, Baileys ints as text, Cloud API channel names) → canonical status.
STATUS: dict[str, OutgoingStatus] = {
    "ERROR": "not_sent",
    "PENDING": "sending",
    "SERVER_ACK": "sent",
    "DELIVERY_ACK": "delivered",
    "READ": "read",
    "PLAYED": "played",
    "0": "not_sent",
    "1": "sending",
    "2": "sent",
    "3": "delivered",
    "4": "read",
    "5": "played",
    "SENT": "sent",
    "DELIVERED": "delivered",
    "FAILED": "not_sent",
}

#: Status that means the message was deleted (not an ack).
DELETED = "DELETED"

#: ``connection.update`` ``data.state`` → canonical instance status.
STATE: dict[str, InstanceStatus] = {**BAILEYS_CONNECTION, "refused": "stopped"}

#: Status names only the Cloud API channel sends (Meta's, upper-cased): always our messages.
CLOUD_ONLY = frozenset({"SENT", "DELIVERED", "FAILED"})

#: ``messageType`` (= the Baileys message field) → message kind.
KIND: dict[str, str] = BAILEYS_KIND

#: Baileys ``ProtocolMessage.Type.REVOKE`` (an int, or its name when serialised as text).
REVOKE = (0, "REVOKE")

MESSAGE_EVENTS = ("messages.upsert", "send.message")

T = TypeVar("T")


class _Struct(msgspec.Struct, frozen=True, rename="camel"):
    """Evolution (and Baileys) spell their fields in camelCase."""


class _Envelope(msgspec.Struct, frozen=True):
    event: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    date_time: Stamp = None
    sender: str | None = None


class _Long(_Struct, frozen=True):
    """A protobuf Long as Baileys serialises it when it is not converted to a number."""

    low: int
    high: int = 0


class _Key(_Struct, frozen=True):
    id: Id = None
    remote_jid: str | None = None
    from_me: bool | None = None
    participant: str | None = None


class _Context(_Struct, frozen=True):
    stanza_id: str | None = None


class _Text(_Struct, frozen=True):
    text: str | None = None
    context_info: _Context | None = None


class _Media(_Struct, frozen=True):
    url: str | None = None
    caption: str | None = None
    ptt: bool | None = None
    context_info: _Context | None = None


class _Wrapped(_Struct, frozen=True):
    message: _Content | None = None


class _Location(_Struct, frozen=True):
    name: str | None = None
    address: str | None = None
    context_info: _Context | None = None


class _ContactCard(_Struct, frozen=True):
    display_name: str | None = None
    context_info: _Context | None = None


class _Reaction(_Struct, frozen=True):
    text: str | None = None
    key: _Key | None = None


class _Poll(_Struct, frozen=True):
    name: str | None = None
    context_info: _Context | None = None


class _Protocol(_Struct, frozen=True):
    type: int | str | None = None
    key: _Key | None = None


class _Content(_Struct, frozen=True):
    conversation: str | None = None
    extended_text_message: _Text | None = None
    image_message: _Media | None = None
    video_message: _Media | None = None
    ptv_message: _Media | None = None
    audio_message: _Media | None = None
    document_message: _Media | None = None
    document_with_caption_message: _Wrapped | None = None
    sticker_message: _Media | None = None
    location_message: _Location | None = None
    live_location_message: _Location | None = None
    contact_message: _ContactCard | None = None
    contacts_array_message: _ContactCard | None = None
    reaction_message: _Reaction | None = None
    poll_creation_message: _Poll | None = None
    poll_creation_message_v2: _Poll | None = msgspec.field(
        default=None, name="pollCreationMessageV2"
    )
    poll_creation_message_v3: _Poll | None = msgspec.field(
        default=None, name="pollCreationMessageV3"
    )
    protocol_message: _Protocol | None = None
    edited_message: Any = None
    media_url: str | None = None


class _Message(_Struct, frozen=True):
    key: _Key | None = None
    message: _Content | None = None
    context_info: _Context | None = None
    message_type: str | None = None
    message_timestamp: int | float | str | _Long | None = None
    status: int | str | None = None


class _Update(_Struct, frozen=True):
    key_id: Id = None
    id: Id = None  # v1.x: the Baileys key spread into data
    remote_jid: str | None = None
    from_me: bool | None = None
    participant: str | None = None
    status: int | str | None = None
    datetime: Stamp = None
    key: _Key | None = None
    poll_updates: Any = None


class _Deleted(_Struct, frozen=True):
    """``messages.delete`` sends the Baileys key itself (some versions wrap it in ``key``)."""

    id: Id = None
    key_id: Id = None
    from_me: bool | None = None
    key: _Key | None = None


class _Connection(_Struct, frozen=True):
    state: str | None = None
    status_reason: int | str | None = None


class _InstanceStatus(_Struct, frozen=True):
    status: str | None = None
    disconnection_reason_code: int | str | None = None


class _QrCode(_Struct, frozen=True):
    qrcode: Any = None
    message: str | None = None


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one Evolution API webhook into canonical facts."""
    envelope = parse_json(body, _Envelope)
    raw_event = envelope.event
    if raw_event is None or not raw_event.strip():
        raise DecodeError("invalid_payload", "event: missing event name")
    event = raw_event.strip().lower().replace("_", ".")[:64]
    sent_at = bounded_epoch(envelope.date_time, "date_time")
    if event in MESSAGE_EVENTS:
        facts: list[Fact] = []
        for where, message in _many(envelope.data, _Message):
            facts.extend(_message(message, envelope.sender, event, sent_at, where))
        return facts or [Ignored(reason=f"{event} without messages", event=event)]
    if event == "messages.update":
        updates = _many(envelope.data, _Update)
        facts = [_update(update, event, sent_at, where) for where, update in updates]
        return facts or [Ignored(reason=f"{event} without updates", event=event)]
    if event == "messages.delete":
        return [
            _deleted(deleted, event, sent_at, where)
            for where, deleted in _many(envelope.data, _Deleted)
        ]
    if event == "connection.update":
        return [_connection(parse_part(envelope.data, _Connection, "data"), sent_at)]
    if event == "qrcode.updated":
        qr = parse_part(envelope.data, _QrCode, "data")
        if qr.qrcode is None:
            note = (qr.message or "no QR code")[:120]
            return [Ignored(reason=f"qrcode.updated without a QR code: {note}", event=event)]
        return [InstanceStatusReported(status="qr_required", raw=event, provider_time=sent_at)]
    if event == "logout.instance":
        return [InstanceStatusReported(status="logged_out", raw=event, provider_time=sent_at)]
    if event == "status.instance":
        return [_instance_status(parse_part(envelope.data, _InstanceStatus, "data"), sent_at)]
    return [Ignored(reason=f"event {event!r} is not folded", event=event)]


def _message(
    message: _Message, own_jid: str | None, event: str, sent_at: float | None, where: str
) -> list[Fact]:
    if message.key is None:
        raise DecodeError("invalid_payload", f"{where}.key: missing")
    key = bounded_id(message.key.id, f"{where}.key.id")
    from_me = message.key.from_me
    if from_me is None:
        raise DecodeError("invalid_payload", f"{where}.key.fromMe: missing (direction unknown)")
    direction: Direction = "outgoing" if from_me else "incoming"
    when = _timestamp(message.message_timestamp, f"{where}.messageTimestamp")
    content = message.message
    protocol = content.protocol_message if content else None
    if protocol is not None:
        if protocol.type not in REVOKE:
            return [
                Ignored(
                    reason=f"protocolMessage of type {protocol.type!r}, not a revoke"[:120],
                    event=event,
                )
            ]
        target = protocol.key.id if protocol.key else None
        deleted = bounded_id(target, f"{where}.message.protocolMessage.key.id")
        return [MessageDeleted(key=deleted, raw="REVOKE", direction=direction, provider_time=when)]
    if content is not None and content.edited_message is not None:
        return [Ignored(reason="message edit (acklog tracks delivery, not content)", event=event)]
    remote = message.key.remote_jid or None
    kind = _kind(message)
    facts: list[Fact] = [
        MessageObserved(
            key=key,
            direction=direction,
            chat=remote,
            sender=(own_jid or None) if from_me else (message.key.participant or remote),
            kind=kind,
            text=_text(content),
            media=_media(content),
            quoted=_quoted(message, content),
            provider_time=when,
        )
    ]
    if from_me and message.status is not None:
        facts.append(_status(key, message.status, True, None, sent_at, event, f"{where}.status"))
    return facts


def _update(update: _Update, event: str, sent_at: float | None, where: str) -> Fact:
    key_id = update.key_id
    if key_id is None and update.key is not None:
        key_id = update.key.id
    if key_id is None:
        key_id = update.id
    key = bounded_id(key_id, f"{where}.keyId")
    from_me = update.from_me
    if from_me is None and update.key is not None:
        from_me = update.key.from_me
    if update.status is None:
        what = "poll vote" if update.poll_updates is not None else "update without status"
        return Ignored(reason=f"{what} for message {key[:64]}", event=event)
    when = bounded_epoch(update.datetime, f"{where}.datetime")
    participant = update.participant if update.participant != update.remote_jid else None
    return _status(
        key,
        update.status,
        from_me,
        participant,
        sent_at if when is None else when,
        event,
        f"{where}.status",
    )


def _deleted(deleted: _Deleted, event: str, sent_at: float | None, where: str) -> Fact:
    key_id = deleted.id if deleted.id is not None else deleted.key_id
    from_me = deleted.from_me
    if deleted.key is not None:
        key_id = deleted.key.id if key_id is None else key_id
        from_me = deleted.key.from_me if from_me is None else from_me
    return MessageDeleted(
        key=bounded_id(key_id, f"{where}.id"),
        raw=event,
        direction=bool_direction(from_me),
        provider_time=sent_at,
    )


def _status(
    key: str,
    status: int | str,
    from_me: bool | None,
    participant: str | None,
    when: float | None,
    event: str,
    field: str,
) -> Fact:
    guard_int(status, field)
    raw = str(status).strip()
    if not raw:
        raise DecodeError("invalid_payload", f"{field}: empty status")
    if raw.upper() == DELETED:
        return MessageDeleted(
            key=key, raw=raw, direction=bool_direction(from_me), provider_time=when
        )
    if from_me is False and raw.upper() not in CLOUD_ONLY:
        return Ignored(
            reason=f"status {raw[:64]} of an incoming message (our own receipt)",
            event=event,
        )
    canonical = STATUS.get(raw.upper())
    if canonical is None:
        return Ignored(reason=f"unknown status {raw[:64]!r}", event=event)
    return StatusReported(
        key=key, status=canonical, raw=raw, provider_time=when, participant=participant or None
    )


def _connection(connection: _Connection, sent_at: float | None) -> Fact:
    state = connection.state
    if not state:
        raise DecodeError("invalid_payload", "data.state: missing connection state")
    reason_code = connection.status_reason
    if isinstance(reason_code, int) and reason_code.bit_length() > MAX_INT_BITS:
        raise DecodeError("invalid_payload", "data.statusReason: out of range")
    status = STATE.get(state, "unknown")
    if state == "close":
        status = baileys_state(state, reason_code)
    reason = None if reason_code is None else f"statusReason {reason_code}"[:120]
    return InstanceStatusReported(status=status, raw=state, reason=reason, provider_time=sent_at)


def _instance_status(report: _InstanceStatus, sent_at: float | None) -> Fact:
    """``status.instance``: only ``closed`` (Evolution stopped reconnecting) is a state."""
    raw = (report.status or "").strip()
    if raw != "closed":
        return Ignored(
            reason=f"status.instance {raw[:40]!r} is not a connection state",
            event="status.instance",
        )
    code = report.disconnection_reason_code
    guard_int(code, "data.disconnectionReasonCode")
    if code is None:  # v1.x: sent only after a loggedOut close
        return InstanceStatusReported(status="logged_out", raw=raw, provider_time=sent_at)
    status = BAILEYS_CLOSE.get(str(code).strip(), "stopped")
    return InstanceStatusReported(
        status=status,
        raw=raw,
        reason=f"disconnectionReasonCode {code}"[:120],
        provider_time=sent_at,
    )


def _kind(message: _Message) -> str:
    content = message.message
    audio = content.audio_message if content else None
    message_type = message.message_type
    if message_type is None and content is not None:
        message_type = _present_type(content)
    kind = KIND.get(message_type or "", "other")
    if kind == "audio" and audio is not None and audio.ptt:
        return "voice"
    return kind


def _present_type(content: _Content) -> str | None:
    """The Baileys message field that is present, for payloads without ``messageType``."""
    fields: dict[str, object | None] = {
        "conversation": content.conversation,
        "extendedTextMessage": content.extended_text_message,
        "imageMessage": content.image_message,
        "videoMessage": content.video_message,
        "ptvMessage": content.ptv_message,
        "audioMessage": content.audio_message,
        "documentMessage": content.document_message,
        "documentWithCaptionMessage": content.document_with_caption_message,
        "stickerMessage": content.sticker_message,
        "locationMessage": content.location_message,
        "liveLocationMessage": content.live_location_message,
        "contactMessage": content.contact_message,
        "contactsArrayMessage": content.contacts_array_message,
        "reactionMessage": content.reaction_message,
        "pollCreationMessage": content.poll_creation_message,
        "pollCreationMessageV2": content.poll_creation_message_v2,
        "pollCreationMessageV3": content.poll_creation_message_v3,
    }
    return next((name for name, value in fields.items() if value is not None), None)


def _text(content: _Content | None) -> str | None:
    if content is None:
        return None
    candidates: list[str | None] = [content.conversation]
    if content.extended_text_message is not None:
        candidates.append(content.extended_text_message.text)
    for media in _medias(content):
        candidates.append(media.caption)
    for place in (content.location_message, content.live_location_message):
        if place is not None:
            candidates.append(place.name or place.address)
    for card in (content.contact_message, content.contacts_array_message):
        if card is not None:
            candidates.append(card.display_name)
    if content.reaction_message is not None:
        candidates.append(content.reaction_message.text)
    for poll in _polls(content):
        candidates.append(poll.name)
    return next((text for text in candidates if text), None)


def _media(content: _Content | None) -> str | None:
    if content is None:
        return None
    if content.media_url:
        return content.media_url
    return next((media.url for media in _medias(content) if media.url), None)


def _quoted(message: _Message, content: _Content | None) -> str | None:
    if content is not None and content.reaction_message is not None:
        target = content.reaction_message.key
        if target is not None and target.id is not None:
            return bounded_id(target.id, "data.message.reactionMessage.key.id")
    contexts: list[_Context | None] = [message.context_info]
    if content is not None:
        if content.extended_text_message is not None:
            contexts.append(content.extended_text_message.context_info)
        contexts.extend(media.context_info for media in _medias(content))
        for place in (content.location_message, content.live_location_message):
            contexts.append(place.context_info if place else None)
        for card in (content.contact_message, content.contacts_array_message):
            contexts.append(card.context_info if card else None)
        contexts.extend(poll.context_info for poll in _polls(content))
    return next((c.stanza_id for c in contexts if c is not None and c.stanza_id), None)


def _medias(content: _Content) -> list[_Media]:
    wrapped = content.document_with_caption_message
    inner = wrapped.message.document_message if wrapped and wrapped.message else None
    candidates = (
        content.image_message,
        content.video_message,
        content.ptv_message,
        content.audio_message,
        content.document_message,
        inner,
        content.sticker_message,
    )
    return [media for media in candidates if media is not None]


def _polls(content: _Content) -> list[_Poll]:
    candidates = (
        content.poll_creation_message,
        content.poll_creation_message_v2,
        content.poll_creation_message_v3,
    )
    return [poll for poll in candidates if poll is not None]


def _many(raw: msgspec.Raw, type_: type[T]) -> list[tuple[str, T]]:
    """``data`` as (place, item) pairs: one object, or (defensively) an array of them."""
    if bytes(raw).lstrip()[:1] == b"[":
        items = parse_part(raw, list[type_], "data")  # type: ignore[valid-type]
        return [(f"data[{i}]", item) for i, item in enumerate(items)]
    return [("data", parse_part(raw, type_, "data"))]


def _timestamp(value: int | float | str | _Long | None, field: str) -> float | None:
    if isinstance(value, _Long):
        if value.low.bit_length() > MAX_INT_BITS or value.high.bit_length() > MAX_INT_BITS:
            raise DecodeError("invalid_payload", f"{field}: Long out of range")
        return bounded_epoch(((value.high & 0xFFFFFFFF) << 32) | (value.low & 0xFFFFFFFF), field)
    return bounded_epoch(value, field)
