"""Green-API (green-api.com) webhooks → canonical facts.

Green-API POSTs one JSON object per event; ``typeWebhook`` names the kind:

* ``outgoingMessageStatus`` — ack of an outgoing message: ``idMessage`` + ``status``
  (sent, delivered, read, failed/fail, noAccount, notInGroup, yellowCard, noActiveSession)
  → ``StatusReported``. Failures carry an optional ``description`` ("SWE004: …").
* ``incomingMessageReceived`` / ``outgoingMessageReceived`` (sent from the phone) /
  ``outgoingAPIMessageReceived`` (sent through the API) — one message each, same shape:
  ``idMessage``, ``senderData{chatId,sender}``, ``messageData{typeMessage, …Data}``
  → ``MessageObserved``; ``typeMessage=deletedMessage`` → ``MessageDeleted``.
* ``stateInstanceChanged`` (authorisation state) and ``statusInstanceChanged`` (socket
  online/offline, a separate axis) → ``InstanceStatusReported``.
* Anything else (``incomingMessageStatus``, ``deviceInfo``, ``incomingCall``, …) → ``Ignored``.

Traps and assumptions:

* ``timestamp`` is epoch seconds; it is the event time, used as ``provider_time``.
* Replies: the documented ``quotedMessage.stanzaId`` is the replied-to message; the deprecated
  ``typeMessage=quotedMessage`` shape also has ``extendedTextMessageData.stanzaId``, which in the
  published example differs from ``quotedMessage.stanzaId`` — ``quotedMessage`` wins.
* Failure statuses become ``not_sent``. ``error_code`` is the ``SWE…`` code when the
  description starts with one, else the raw status; ``error_text`` is the description or the
  documented meaning of the status. ``yellowCard`` on a message is ``not_sent`` even though
  Green-API may retry it within 24 h: a later ``delivered`` still outranks it (invariant 5).
* ``stateInstance=yellowCard`` is, in Green-API's words (``GetStateInstance``), "sending
  messages has been partially or completely suspended on the account due to spamming
  activity; messages sent after receiving the status are stored in the queue for 24 hours;
  to continue, reboot the instance": ``suspended`` (session up, sending stopped), not a ban
  (``blocked`` is the ban).
* Polls: the current docs put the poll in ``pollMessageData``, older ones in
  ``pollCreationMessage`` (same ``name``); both are read.
* Outgoing message webhooks carry no status, so they emit no ``StatusReported``. Edits and
  poll votes are ``Ignored``; acklog folds neither. Green-API has no event id of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
from projections.providers._common import Stamp, bounded_epoch, parse_json, text_id
from projections.providers.base import FailureTable, Provider
from projections.providers.simulation import Ack, Builder, Failure, Msg, Request, encode, now

#: ``outgoingMessageStatus.status`` → canonical outgoing status.
STATUS: dict[str, OutgoingStatus] = {
    "pending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "not_sent",
    "fail": "not_sent",  # pre-2023 docs spelling of "failed"
    "noAccount": "not_sent",
    "notInGroup": "not_sent",
    "yellowCard": "not_sent",
    "noActiveSession": "not_sent",  # WABA: the 24-hour window is closed
}

#: Documented meaning of failure statuses, used when the payload has no ``description``.
FAILURE_TEXT: dict[str, str] = {
    "noAccount": "recipient has no WhatsApp account",
    "notInGroup": "sender is not a participant of the group",
    "yellowCard": "sending suspended for spam activity (yellowCard)",
    "noActiveSession": "24-hour messaging window is closed",
}

#: ``stateInstanceChanged.stateInstance`` → canonical instance status.
STATE: dict[str, InstanceStatus] = {
    "authorized": "connected",
    "notAuthorized": "qr_required",
    "pendingCode": "qr_required",  # authorisation waits for a pairing code
    "blocked": "banned",
    "yellowCard": "suspended",  # sending suspended for spam; session itself still up
    "sleepMode": "disconnected",  # phone off; Green-API says "status out of date"
    "starting": "starting",
}

#: ``statusInstanceChanged.statusInstance`` → canonical instance status.
SOCKET: dict[str, InstanceStatus] = {"online": "connected", "offline": "disconnected"}

#: ``messageData.typeMessage`` → message kind (anything else is ``other``).
KIND: dict[str, str] = {
    "textMessage": "text",
    "extendedTextMessage": "text",
    "quotedMessage": "text",
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
    "locationMessage": "location",
    "contactMessage": "contact",
    "contactsArrayMessage": "contact",
    "reactionMessage": "reaction",
    "pollMessage": "poll",
}

#: Message webhooks and the direction of the message they carry.
MESSAGE_WEBHOOKS: dict[str, Direction] = {
    "incomingMessageReceived": "incoming",
    "outgoingMessageReceived": "outgoing",
    "outgoingAPIMessageReceived": "outgoing",
}

#: Message types that are well-formed but not folded.
IGNORED_TYPES: dict[str, str] = {
    "editedMessage": "message edit (acklog does not track edits)",
    "pollUpdateMessage": "poll vote",
}

_ERROR_CODE = re.compile(r"^\s*([A-Z]{2,}\d+)\b")


class _Struct(msgspec.Struct, frozen=True, rename="camel"):
    """Green-API spells its fields in camelCase."""


class _Envelope(_Struct, frozen=True):
    type_webhook: str | None = None


class _OutgoingStatus(_Struct, frozen=True):
    id_message: str | None = None
    status: str | None = None
    description: str | None = None
    timestamp: Stamp = None


class _StateChanged(_Struct, frozen=True):
    state_instance: str | None = None
    timestamp: Stamp = None


class _StatusChanged(_Struct, frozen=True):
    status_instance: str | None = None
    timestamp: Stamp = None


class _SenderData(_Struct, frozen=True):
    chat_id: str | None = None
    sender: str | None = None


class _TextData(_Struct, frozen=True):
    text_message: str | None = None


class _ExtendedTextData(_Struct, frozen=True):
    text: str | None = None
    stanza_id: str | None = None


class _FileData(_Struct, frozen=True):
    download_url: str | None = None
    caption: str | None = None


class _ContactData(_Struct, frozen=True):
    display_name: str | None = None


class _PollData(_Struct, frozen=True):
    name: str | None = None


class _Quoted(_Struct, frozen=True):
    stanza_id: str | None = None


class _Deleted(_Struct, frozen=True):
    stanza_id: str | None = None


class _MessageData(_Struct, frozen=True):
    type_message: str | None = None
    text_message_data: _TextData | None = None
    extended_text_message_data: _ExtendedTextData | None = None
    file_message_data: _FileData | None = None
    contact_message_data: _ContactData | None = None
    poll_message_data: _PollData | None = None
    #: the older documented name of ``pollMessageData`` (``{name, options,
    #: selectableOptionsCount}``)
    poll_creation_message: _PollData | None = None
    quoted_message: _Quoted | None = None
    deleted_message_data: _Deleted | None = None


class _Message(_Struct, frozen=True):
    id_message: str | None = None
    timestamp: Stamp = None
    sender_data: _SenderData | None = None
    message_data: _MessageData | None = None


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one Green-API webhook into canonical facts."""
    kind = parse_json(body, _Envelope).type_webhook
    if kind is None or not kind.strip():
        raise DecodeError("invalid_payload", "typeWebhook: missing webhook type")
    if kind == "outgoingMessageStatus":
        return [_status(parse_json(body, _OutgoingStatus))]
    if kind in MESSAGE_WEBHOOKS:
        return [_message(parse_json(body, _Message), MESSAGE_WEBHOOKS[kind], kind)]
    if kind == "stateInstanceChanged":
        state = parse_json(body, _StateChanged)
        raw = _required(state.state_instance, "stateInstance")
        reason = FAILURE_TEXT["yellowCard"] if raw == "yellowCard" else None
        return [
            InstanceStatusReported(
                status=STATE.get(raw, "unknown"),
                raw=raw,
                reason=reason,
                provider_time=bounded_epoch(state.timestamp, "timestamp"),
            )
        ]
    if kind == "statusInstanceChanged":
        socket = parse_json(body, _StatusChanged)
        raw = _required(socket.status_instance, "statusInstance")
        return [
            InstanceStatusReported(
                status=SOCKET.get(raw, "unknown"),
                raw=raw,
                provider_time=bounded_epoch(socket.timestamp, "timestamp"),
            )
        ]
    if kind == "incomingMessageStatus":
        return [Ignored(reason="status of an incoming message (our own receipt)", event=kind)]
    return [Ignored(reason=f"webhook type {kind[:64]!r} is not folded", event=kind[:64])]


def _status(event: _OutgoingStatus) -> Fact:
    key = text_id(event.id_message, "idMessage")
    raw = _required(event.status, "status")
    status = STATUS.get(raw)
    if status is None:
        return Ignored(
            reason=f"unknown outgoingMessageStatus status {raw[:64]!r}",
            event="outgoingMessageStatus",
        )
    code = text = None
    if status == "not_sent":
        description = _text(event.description)
        match = _ERROR_CODE.match(description or "")
        code = match.group(1) if match else raw
        text = description or FAILURE_TEXT.get(raw)
    return StatusReported(
        key=key,
        status=status,
        raw=raw,
        provider_time=bounded_epoch(event.timestamp, "timestamp"),
        error_code=code,
        error_text=text,
    )


def _message(event: _Message, direction: Direction, kind: str) -> Fact:
    key = text_id(event.id_message, "idMessage")
    data = event.message_data
    if data is None:
        raise DecodeError("invalid_payload", "messageData: missing")
    type_message = _required(data.type_message, "messageData.typeMessage")
    when = bounded_epoch(event.timestamp, "timestamp")
    if type_message == "deletedMessage":
        deleted = data.deleted_message_data
        target = text_id(deleted.stanza_id if deleted else None, "deletedMessageData.stanzaId")
        return MessageDeleted(key=target, raw=type_message, direction=direction, provider_time=when)
    if type_message in IGNORED_TYPES:
        return Ignored(reason=IGNORED_TYPES[type_message], event=f"{kind}/{type_message}")
    sender = event.sender_data
    extended = data.extended_text_message_data
    quoted = _text(data.quoted_message.stanza_id if data.quoted_message else None)
    if quoted is None and extended is not None:
        quoted = _text(extended.stanza_id)
    return MessageObserved(
        key=key,
        direction=direction,
        chat=_text(sender.chat_id) if sender else None,
        sender=_text(sender.sender) if sender else None,
        kind=KIND.get(type_message, "other"),
        text=_message_text(data),
        media=_text(data.file_message_data.download_url) if data.file_message_data else None,
        quoted=quoted,
        provider_time=when,
    )


def _message_text(data: _MessageData) -> str | None:
    candidates = (
        data.text_message_data.text_message if data.text_message_data else None,
        data.extended_text_message_data.text if data.extended_text_message_data else None,
        data.file_message_data.caption if data.file_message_data else None,
        data.contact_message_data.display_name if data.contact_message_data else None,
        data.poll_message_data.name if data.poll_message_data else None,
        data.poll_creation_message.name if data.poll_creation_message else None,
    )
    return next((text for text in map(_text, candidates) if text is not None), None)


def _required(value: str | None, field: str) -> str:
    text = _text(value)
    if text is None:
        raise DecodeError("invalid_payload", f"{field}: missing")
    return text


def _text(value: str | None) -> str | None:
    """Empty strings are absent values (Green-API sends ``"caption": ""``)."""
    return value if value else None


# -- failure codes (projections.failures.classify) ---------------------------------------------

FAILURES = FailureTable(
    codes={
        # the decoder reports the raw status as the code when the description has no SWE code
        "noAccount": "not_on_whatsapp",
        "notInGroup": "not_in_group",
        "yellowCard": "account_restricted",
        "noActiveSession": "outside_window",
        "SWE004": "invalid_request",  # the group's participant limit is exceeded
    },
    statuses={
        "noAccount": "not_on_whatsapp",
        "notInGroup": "not_in_group",
        "yellowCard": "account_restricted",
        "noActiveSession": "outside_window",
    },
    ranges=(),
    sources=(
        "https://green-api.com/en/docs/api/receiving/notifications-format/outgoing-message/"
        "OutgoingMessageStatus/ (statuses noAccount, notInGroup, yellowCard, noActiveSession)",
        "https://apidog.com/apidoc/docs-site/746016/error-swe004-18916718e0 (SWE004)",
    ),
)


# -- acklog simulate ---------------------------------------------------------------------------

#: the terminal failure in shared/samples/green_api/outgoingMessageStatus_noAccount.json
_SIM_FAILED = "noAccount"


class Simulator(Builder):
    """Green-API bodies (shapes: shared/samples/green_api/*): ``incomingMessageReceived``,
    ``outgoingAPIMessageReceived``, ``outgoingMessageStatus`` and ``statusInstanceChanged``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instance_data = {
            "idInstance": int("1101" + self.ids.digits(6)),
            "wid": f"{self.me}@c.us",
            "typeInstance": "whatsapp",
        }

    def _webhook(self, kind: str, **fields: Any) -> bytes:
        return encode(
            {
                "typeWebhook": kind,
                "instanceData": self.instance_data,
                "timestamp": int(now()),
                **fields,
            }
        )

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.phone_id(), contact=self.ids.phone(), text=self.texts()[0])
        chat = f"{msg.contact}@c.us"
        body = self._webhook(
            "incomingMessageReceived",
            idMessage=msg.key,
            senderData={
                "chatId": chat,
                "chatName": "Simulated Contact",
                "sender": chat,
                "senderName": "Simulated Contact",
                "senderContactName": "",
            },
            messageData={
                "typeMessage": "textMessage",
                "textMessageData": {"textMessage": msg.text},
            },
        )
        return msg, Request(body=body, raw="incomingMessageReceived")

    def new_outgoing(self) -> Msg:
        # ids of messages sent through the API start BAE5 (Baileys style)
        return Msg(key="BAE5" + self.ids.hex(12), contact=self.ids.phone(), text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        body = self._webhook(
            "outgoingAPIMessageReceived",
            idMessage=msg.key,
            senderData={
                "chatId": f"{msg.contact}@c.us",
                "chatName": "Simulated Contact",
                "sender": f"{self.me}@c.us",
                "senderName": "acklog",
            },
            messageData={
                "typeMessage": "extendedTextMessage",
                "extendedTextMessageData": {
                    "text": msg.text,
                    "description": "",
                    "title": "",
                    "previewType": "None",
                    "jpegThumbnail": "",
                    "forwardingScore": 0,
                    "isForwarded": False,
                },
            },
        )
        return Request(body=body, raw="outgoingAPIMessageReceived")

    def _status(self, msg: Msg, status: str) -> Request:
        body = self._webhook(
            "outgoingMessageStatus",
            chatId=f"{msg.contact}@c.us",
            idMessage=msg.key,
            status=status,
            sendByApi=True,
        )
        return Request(body=body, raw=f"outgoingMessageStatus {status}")

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._status(msg, status)

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._status(msg, _SIM_FAILED), code=_SIM_FAILED)

    def instance(self, up: bool) -> Request:
        state = "online" if up else "offline"
        body = self._webhook("statusInstanceChanged", statusInstance=state)
        return Request(body=body, raw=f"statusInstanceChanged {state}")


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(name="greenapi", decode=decode, failures=FAILURES, simulator=Simulator)
