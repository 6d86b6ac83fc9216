"""WAHA (WhatsApp HTTP API, waha.devlike.pro) webhooks → canonical facts.

WAHA POSTs one event per request: ``{"id": "evt_…" (newer versions), "timestamp": <ms>,
"event": ..., "session": ..., "me": {"id": ...}, "engine": ..., "payload": {...}}``.
The envelope ``id`` is WAHA's own event id (``event_id``, the dedup key).

* ``message`` / ``message.any`` → ``MessageObserved`` keyed by ``payload.id`` (the serialized
  ``{fromMe}_{chat}_{id}[_{participant}]``); an OUTGOING message that carries ``ack`` also
  yields a ``StatusReported``. ``message.reaction`` → ``MessageObserved`` kind ``reaction``.
* ``message.ack`` / ``message.ack.group`` → ``StatusReported`` (-1 ERROR→not_sent, 0 PENDING→sending, 1 SERVER→sent,
  2 DEVICE→delivered, 3 READ→read, 4 PLAYED→played); ``participant`` fills group and
  ``status@broadcast`` receipts. Acks of incoming messages (``fromMe=false``) → ``Ignored``.
* ``message.revoked`` → ``MessageDeleted``; ``session.status`` → ``InstanceStatusReported``.
* ``state.change`` (the engine's own state; before 2023.12 WAHA had no ``session.status``, so
  it is the only instance signal of older versions) → ``InstanceStatusReported``: WEBJS posts
  the whatsapp-web.js ``WAState`` as a bare string (``"CONNECTED"``, ``"UNPAIRED"``, …), NOWEB
  the Baileys ``connection.update`` object (``connection`` open/connecting/close with
  ``lastDisconnect.error.output.statusCode``, or ``qr``).
* Everything else (presence, polls, groups, calls, labels, edits, …) → ``Ignored``.

Traps and assumptions:

* WAHA documents ``message.revoked`` with an example whose ``event`` is ``message.ack``: a
  ``message.ack`` payload without ``id``/``ack`` but with ``before``/``after``/``revokedMessageId``
  is handled as a revoke (dispatch on shape).
* WAHA warns that ``before.id``/``after.id`` of a revoke are NOT the ids of the ``message``
  event, so only ``revokedMessageId`` keys a deletion. It is a bare id; it is re-serialized
  with the prefix/suffix of ``after.id`` (same chat, same sender, so the same ``fromMe`` and
  participant; a group admin deleting someone else's message would break this). A revoke
  without ``revokedMessageId`` (the documented example) cannot be keyed → ``Ignored``.
* Acks carry no timestamp: ``provider_time`` is the envelope ``timestamp`` (newer WAHA) or None.
* Direction is ``fromMe``. Without it, a ``message`` event is incoming: WAHA documents that
  event as "incoming message" only (``message.any`` carries our own), and the published media
  examples, which have no ``fromMe``, are introduced as "when people send you media" although
  their copy-pasted ids start with ``true_``. For other events, the ``true_``/``false_`` prefix
  of the id decides, else incoming for messages and outgoing for acks (an ack for a message
  never seen is ours).
* Kind comes from the engine data (WEBJS ``_data.type``, NOWEB/GOWS proto keys), else the
  media mimetype, location, vCards or body.
"""

from __future__ import annotations

import hmac
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
from projections.providers._common import (
    BAILEYS_KIND,
    WEBJS_STATE,
    Id,
    Stamp,
    baileys_state,
    bool_direction,
    bounded_epoch,
    bounded_id,
    guard_int,
    parse_json,
    parse_part,
    text_id,
)
from projections.providers.base import FailureTable, Provider, Signature, Signed
from projections.providers.simulation import Ack, Builder, Failure, Msg, Request, encode, now

#: ``ack`` (as text) and ``ackName`` → canonical outgoing status.
STATUS: dict[str, OutgoingStatus] = {
    "-1": "not_sent",
    "0": "sending",
    "1": "sent",
    "2": "delivered",
    "3": "read",
    "4": "played",
    "ERROR": "not_sent",
    "PENDING": "sending",
    "SERVER": "sent",
    "DEVICE": "delivered",
    "READ": "read",
    "PLAYED": "played",
}

#: ``session.status`` payload ``status`` → canonical instance status.
SESSION: dict[str, InstanceStatus] = {
    "STOPPED": "stopped",
    "STARTING": "starting",
    "SCAN_QR_CODE": "qr_required",
    "WORKING": "connected",
    # "the session has failed due to some error … Restart the session and if it doesn't help
    # - Logout and Start the session again" (waha.devlike.pro/docs/how-to/sessions)
    "FAILED": "failed",
}

#: WEBJS ``_data.type`` → message kind.
WEBJS_KIND: dict[str, str] = {
    "chat": "text",
    "image": "image",
    "video": "video",
    "ptv": "video",
    "audio": "audio",
    "ptt": "voice",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "vcard": "contact",
    "multi_vcard": "contact",
    "poll_creation": "poll",
    "reaction": "reaction",
    "revoked": "system",
    "e2e_notification": "system",
    "notification_template": "system",
    "gp2": "system",
    "call_log": "system",
    "protocol": "system",
}

#: NOWEB/GOWS proto message field → message kind (``audioMessage.ptt`` makes it a voice note).
PROTO_KIND: dict[str, str] = {**BAILEYS_KIND, "protocolMessage": "system"}

#: Media mimetype family → message kind.
MIME_KIND: dict[str, str] = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "application": "document",
    "text": "document",
}

MESSAGE_EVENTS = ("message", "message.any", "message.reaction")
#: ``message.ack.group`` (newer WAHA) carries per-participant group acks, same payload.
ACK_EVENTS = ("message.ack", "message.ack.group")


class _Struct(msgspec.Struct, frozen=True, rename="camel"):
    """WAHA spells its fields in camelCase."""


class _Me(_Struct, frozen=True):
    id: str | None = None


class _Envelope(_Struct, frozen=True):
    event: str | None = None
    timestamp: Stamp = None
    me: _Me | None = None
    payload: msgspec.Raw = msgspec.Raw()


class _EventId(_Struct, frozen=True):
    id: str | None = None


class _Media(_Struct, frozen=True):
    url: str | None = None
    mimetype: str | None = None


class _ReplyTo(_Struct, frozen=True):
    id: str | None = None


class _Reaction(_Struct, frozen=True):
    text: str | None = None
    message_id: str | None = None


class _Message(_Struct, frozen=True):
    id: Id = None
    timestamp: Stamp = None
    sender: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    participant: str | None = None
    from_me: bool | None = None
    body: str | None = None
    has_media: bool | None = None
    media: _Media | None = None
    media_url: str | None = None
    location: dict[str, Any] | None = None
    v_cards: list[Any] | None = None
    reply_to: str | _ReplyTo | None = None
    reaction: _Reaction | None = None
    ack: int | None = None
    ack_name: str | None = None
    data: Any = msgspec.field(default=None, name="_data")


class _Ack(_Struct, frozen=True):
    id: Id = None
    participant: str | None = None
    from_me: bool | None = None
    ack: int | None = None
    ack_name: str | None = None


class _Shape(_Struct, frozen=True):
    """Just enough of a ``message.ack`` payload to tell an ack from a revoke."""

    id: Any = None
    ack: Any = None
    before: Any = None
    after: Any = None
    revoked_message_id: Any = None


class _RevokedMessage(_Struct, frozen=True):
    id: str | None = None
    timestamp: Stamp = None
    from_me: bool | None = None


class _Revoked(_Struct, frozen=True):
    revoked_message_id: str | None = None
    before: _RevokedMessage | None = None
    after: _RevokedMessage | None = None


class _Session(_Struct, frozen=True):
    status: str | None = None


class _Output(_Struct, frozen=True):
    status_code: int | str | None = None


class _Boom(_Struct, frozen=True):
    """A Boom error as JSON: its ``output`` is enumerable, its message is not."""

    output: _Output | None = None


class _LastDisconnect(_Struct, frozen=True):
    error: _Boom | None = None


class _ConnectionUpdate(_Struct, frozen=True):
    """Baileys ``connection.update`` as WAHA NOWEB forwards it in ``state.change``."""

    connection: str | None = None
    last_disconnect: _LastDisconnect | None = None
    qr: str | None = None


def event_id(body: bytes) -> str | None:
    """The envelope ``id`` (``evt_…``) newer WAHA versions put on every event."""
    try:
        envelope = msgspec.json.decode(body, type=_EventId)
    except (msgspec.DecodeError, RecursionError):
        return None
    if envelope.id is None:
        return None
    return envelope.id.strip() or None


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one WAHA webhook into canonical facts."""
    envelope = parse_json(body, _Envelope)
    event = envelope.event
    if event is None or not event.strip():
        raise DecodeError("invalid_payload", "event: missing event name")
    when = bounded_epoch(envelope.timestamp, "timestamp")
    if event in MESSAGE_EVENTS:
        message = parse_part(envelope.payload, _Message, "payload")
        me = envelope.me.id if envelope.me else None
        return _message(message, event, me, when)
    if event == "message.revoked":
        return [_revoked(parse_part(envelope.payload, _Revoked, "payload"), event, when)]
    if event in ACK_EVENTS:
        shape = parse_part(envelope.payload, _Shape, "payload")
        if shape.id is None and shape.ack is None and _looks_revoked(shape):
            return [_revoked(parse_part(envelope.payload, _Revoked, "payload"), event, when)]
        return [_ack(parse_part(envelope.payload, _Ack, "payload"), event, when)]
    if event == "session.status":
        session = parse_part(envelope.payload, _Session, "payload")
        if not session.status:
            raise DecodeError("invalid_payload", "payload.status: missing session status")
        return [
            InstanceStatusReported(
                status=SESSION.get(session.status, "unknown"),
                raw=session.status,
                provider_time=when,
            )
        ]
    if event == "state.change":
        return [_state_change(envelope.payload, when)]
    return [Ignored(reason=f"event {event[:64]!r} is not folded", event=event[:64])]


def _state_change(payload: msgspec.Raw, when: float | None) -> Fact:
    """WEBJS: a bare ``WAState`` string; NOWEB: a Baileys ``connection.update`` object."""
    if bytes(payload).lstrip()[:1] == b'"':
        state = parse_part(payload, str, "payload").strip()
        if not state:
            raise DecodeError("invalid_payload", "payload: empty state")
        return InstanceStatusReported(
            status=WEBJS_STATE.get(state.upper(), "unknown"), raw=state[:64], provider_time=when
        )
    update = parse_part(payload, _ConnectionUpdate, "payload")
    if update.qr:
        return InstanceStatusReported(status="qr_required", raw="qr", provider_time=when)
    if not update.connection:
        return Ignored(reason="state.change without connection or qr", event="state.change")
    error = update.last_disconnect.error if update.last_disconnect else None
    code = error.output.status_code if error and error.output else None
    guard_int(code, "payload.lastDisconnect.error.output.statusCode")
    return InstanceStatusReported(
        status=baileys_state(update.connection, code),
        raw=update.connection[:64],
        reason=None if code is None else f"statusCode {code}"[:120],
        provider_time=when,
    )


def _looks_revoked(shape: _Shape) -> bool:
    return any(v is not None for v in (shape.before, shape.after, shape.revoked_message_id))


def _message(message: _Message, event: str, me: str | None, when: float | None) -> list[Fact]:
    key = bounded_id(message.id, "payload.id")
    if message.from_me is None and event == "message":
        direction: Direction = "incoming"  # WAHA's ``message`` event is incoming-only
    else:
        direction = _direction(message.from_me, key, default="incoming")
    if direction == "outgoing":
        chat = message.to or message.sender
        # WEBJS: from = our number, to = chat; NOWEB: from = chat and no "to".
        sender = me or (message.sender if message.to else None)
    else:
        chat = message.sender
        sender = message.participant or message.sender
    quoted = message.reply_to if isinstance(message.reply_to, str) else None
    if isinstance(message.reply_to, _ReplyTo):
        quoted = message.reply_to.id
    text = message.body
    if message.reaction is not None:
        text = message.reaction.text
        quoted = message.reaction.message_id or quoted
    facts: list[Fact] = [
        MessageObserved(
            key=key,
            direction=direction,
            chat=chat or None,
            sender=sender or None,
            kind=_kind(message, event),
            text=text or None,
            media=(message.media.url if message.media else None) or message.media_url or None,
            quoted=quoted or None,
            provider_time=bounded_epoch(message.timestamp, "payload.timestamp"),
        )
    ]
    if direction == "outgoing" and (message.ack is not None or message.ack_name):
        raw, status = _ack_status(message.ack, message.ack_name)
        if status is not None:
            facts.append(StatusReported(key=key, status=status, raw=raw, provider_time=when))
    return facts


def _kind(message: _Message, event: str) -> str:
    if event == "message.reaction" or message.reaction is not None:
        return "reaction"
    data = message.data
    if isinstance(data, dict):
        webjs_type = data.get("type")
        if isinstance(webjs_type, str) and webjs_type in WEBJS_KIND:
            return WEBJS_KIND[webjs_type]
        for field in ("message", "Message"):
            proto = data.get(field)
            if isinstance(proto, dict):
                kind = _proto_kind(proto)
                if kind is not None:
                    return kind
    mimetype = message.media.mimetype if message.media else None
    if mimetype:
        return MIME_KIND.get(mimetype.split("/", 1)[0].strip().lower(), "other")
    if message.location:
        return "location"
    if message.v_cards:
        return "contact"
    if message.has_media or message.media is not None:
        return "other"
    return "text" if message.body else "other"


def _proto_kind(proto: dict[str, Any]) -> str | None:
    for field, kind in PROTO_KIND.items():
        if field in proto:
            audio = proto[field]
            if kind == "audio" and isinstance(audio, dict) and audio.get("ptt") is True:
                return "voice"
            return kind
    return None


def _ack(ack: _Ack, event: str, when: float | None) -> Fact:
    key = bounded_id(ack.id, "payload.id")
    if ack.ack is None and not ack.ack_name:
        raise DecodeError("invalid_payload", "payload.ack: missing (and no ackName)")
    raw, status = _ack_status(ack.ack, ack.ack_name)
    if _direction(ack.from_me, key, default="outgoing") == "incoming":
        return Ignored(
            reason=f"ack {raw[:64]} of an incoming message (our own receipt)", event=event
        )
    if status is None:
        return Ignored(reason=f"unknown ack {raw[:64]!r}", event=event)
    return StatusReported(
        key=key, status=status, raw=raw, provider_time=when, participant=ack.participant or None
    )


def _ack_status(ack: int | None, name: str | None) -> tuple[str, OutgoingStatus | None]:
    """(raw, canonical): the number is authoritative, the name is the fallback."""
    if ack is not None:
        guard_int(ack, "payload.ack")
        raw = str(ack)
        status = STATUS.get(raw)
        if status is None and name:
            status = STATUS.get(name)
        return raw, status
    raw = name or ""
    return raw, STATUS.get(raw)


def _revoked(revoked: _Revoked, event: str, when: float | None) -> Fact:
    if not revoked.revoked_message_id:
        return Ignored(
            reason="revoke without revokedMessageId: WAHA's before/after ids are not message "
            "ids, so the deleted message cannot be keyed",
            event=event,
        )
    bare = text_id(revoked.revoked_message_id, "payload.revoked_message_id")
    after = revoked.after
    key = _serialized(bare, after.id if after else None)
    from_me = next(
        (m.from_me for m in (after, revoked.before) if m is not None and m.from_me is not None),
        None,
    )
    direction = bool_direction(from_me)
    if after is not None and after.timestamp is not None:
        when = bounded_epoch(after.timestamp, "payload.after.timestamp")
    return MessageDeleted(key=key, raw="revoked", direction=direction, provider_time=when)


def _serialized(bare: str, after_id: str | None) -> str:
    """Give a bare revoked id the ``{fromMe}_{chat}_…[_{participant}]`` frame of ``after.id``."""
    if "_" in bare or not after_id:
        return bare
    parts = after_id.split("_")
    if len(parts) < 3 or parts[0] not in ("true", "false") or not parts[1]:
        return bare
    parts[2] = bare
    return "_".join(parts)


def _direction(from_me: bool | None, key: str, *, default: Direction) -> Direction:
    if from_me is not None:
        return "outgoing" if from_me else "incoming"
    if key.startswith("true_"):
        return "outgoing"
    if key.startswith("false_"):
        return "incoming"
    return default


# -- signature ---------------------------------------------------------------------------------

#: the algorithms ``X-Webhook-Hmac-Algorithm`` may name (another never verifies)
ALGORITHMS = ("sha512", "sha256")


def signature(secret: str, body: bytes, algorithm: str = "sha512") -> str:
    """The hex HMAC of the raw body, SHA-512 unless ``X-Webhook-Hmac-Algorithm`` says."""
    return hmac.new(secret.encode(), body, algorithm).hexdigest()


def _sign(secret: str, request: Signed) -> str | None:
    algorithm = request.headers.get("X-Webhook-Hmac-Algorithm", "sha512").strip().lower()
    if algorithm not in ALGORITHMS:
        return None  # an algorithm we do not accept never verifies
    return signature(secret, request.body, algorithm)


SIGNATURE = Signature(
    header="X-Webhook-Hmac",
    sign=_sign,
    hex=True,
    companions={"X-Webhook-Hmac-Algorithm": "sha512"},
)


# -- failure codes (projections.failures.classify) ---------------------------------------------

#: an ERROR ack names no reason: WAHA failures are classified by their text alone
FAILURES = FailureTable(
    {},
    {},
    (),
    (
        "devlikeapro/waha docs/site/content/en/docs/how-to/webhooks/index.md: ack -1 ERROR"
        " carries no reason",
    ),
)


# -- acklog simulate ---------------------------------------------------------------------------

#: our canonical ack → WAHA ``ack`` and ``ackName``
_SIM_ACK: dict[Ack, tuple[int, str]] = {
    "sent": (1, "SERVER"),
    "delivered": (2, "DEVICE"),
    "read": (3, "READ"),
}

_SIM_ENVIRONMENT = {"version": "2024.11.11", "engine": "WEBJS", "tier": "CORE", "browser": None}


class Simulator(Builder):
    """WAHA bodies (shapes: shared/samples/waha/*): the newer envelope with its ``evt_…`` event
    id, ``message``/``message.any``, ``message.ack`` and ``session.status`` (engine WEBJS)."""

    notes = ("an ack of -1 (ERROR) carries no error detail",)

    def _event(self, event: str, payload: dict[str, Any]) -> bytes:
        return encode(
            {
                "id": "evt_" + self.ids.ulid(),  # WAHA's event id: the dedup key
                "timestamp": int(now() * 1000),
                "event": event,
                "session": "default",
                "me": {"id": f"{self.me}@c.us", "pushName": "acklog"},
                "payload": payload,
                "engine": "WEBJS",
                "environment": _SIM_ENVIRONMENT,
            }
        )

    def _message(self, msg: Msg, from_me: bool, ack: int, ack_name: str) -> dict[str, Any]:
        me, them, at = f"{self.me}@c.us", f"{msg.contact}@c.us", int(now())
        sender, to = (me, them) if from_me else (them, me)
        bare = msg.key.rsplit("_", 1)[-1]
        data = {
            "id": {"fromMe": from_me, "remote": them, "id": bare, "_serialized": msg.key},
            "body": msg.text,
            "type": "chat",
            "t": at,
            "notifyName": "Simulated Contact",
            "from": sender,
            "to": to,
            "ack": ack,
            "isNewMsg": True,
        }
        return {
            "id": msg.key,
            "timestamp": at,
            "from": sender,
            "fromMe": from_me,
            "to": to,
            "body": msg.text,
            "hasMedia": False,
            "ack": ack,
            "ackName": ack_name,
            "vCards": [],
            "_data": data,
        }

    def incoming(self) -> tuple[Msg, Request]:
        contact = self.ids.phone()
        key = self.ids.serialized(False, f"{contact}@c.us", self.ids.phone_id())
        msg = Msg(key=key, contact=contact, text=self.texts()[0])
        body = self._event("message", self._message(msg, False, 1, "SERVER"))
        return msg, Request(body=body, raw="message")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        key = self.ids.serialized(True, f"{contact}@c.us", self.ids.web_id())
        return Msg(key=key, contact=contact, text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        body = self._event("message.any", self._message(msg, True, 0, "PENDING"))
        return Request(body=body, raw="message.any ack=0 PENDING")

    def _ack(self, msg: Msg, ack: int, name: str) -> Request:
        payload = {
            "id": msg.key,
            "from": f"{msg.contact}@c.us",
            "participant": None,
            "fromMe": True,
            "ack": ack,
            "ackName": name,
        }
        return Request(body=self._event("message.ack", payload), raw=f"message.ack {ack} {name}")

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._ack(msg, *_SIM_ACK[status])

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._ack(msg, -1, "ERROR"))

    def instance(self, up: bool) -> Request:
        status = "WORKING" if up else "FAILED"
        body = self._event("session.status", {"status": status})
        return Request(body=body, raw=f"session.status {status}")


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(
    name="waha",
    decode=decode,
    event_id=event_id,
    signature=SIGNATURE,
    failures=FAILURES,
    simulator=Simulator,
)
