"""Meta WhatsApp Cloud API (and legacy On-Premises API) webhooks → canonical facts.

Meta POSTs ``{"object": "whatsapp_business_account", "entry": [{"id": <WABA id>, "changes":
[{"field": ..., "value": {...}}]}]}``. Every level is an array and one POST may batch several
entries, changes and elements; every element is decoded, in payload order.

* ``field=messages``: ``value.statuses[]`` (acks of OUR messages, keyed by the wamid in ``id``:
  sent, delivered, read, played, failed → ``StatusReported``; legacy On-Premises ``deleted`` →
  ``MessageDeleted``), ``value.messages[]`` (incoming → ``MessageObserved``; ``type=revoke`` →
  ``MessageDeleted`` of ``revoke.original_message_id``) and ``value.errors[]`` (out-of-band
  errors without a message id → ``Ignored``).
* ``field=smb_message_echoes`` (WhatsApp Business app "coexistence"): ``value.message_echoes[]``
  are OUR messages sent from the Business app → ``MessageObserved`` outgoing; a revoke echo is
  the deletion of one of our messages → ``MessageDeleted`` outgoing.
* Any other ``field`` (account_update, templates, history, …) or ``object`` → ``Ignored``.
* The On-Premises API (sunset 2025, still run by BSPs) POSTs what the Cloud API wraps in
  ``entry[].changes[].value`` bare: ``{"contacts", "messages"}``, ``{"statuses"}`` or
  ``{"errors"}`` at the top level, without ``object``/``entry``. Such a body is read as one
  ``value``. Its voice notes are ``type=voice`` with a ``voice`` object (Cloud: ``audio`` with
  ``voice: true``); its ids are not wamids.

Traps and assumptions:

* Acks arrive out of order and Meta may skip ``delivered`` when ``read`` implies it; timestamps
  are strings of epoch seconds and can go backwards (see the samples): folding is by rank.
* ``failed`` → ``not_sent`` with ``error_code`` = ``errors[0].code`` and ``error_text`` = the
  distinct parts of ``title``, ``message`` and ``error_data.details`` joined by ": ".
* Group receipts are per participant: ``recipient_participant_id`` fills ``participant``.
* A reaction's target wamid is reported as ``quoted``; button/interactive replies are kind
  ``other`` with the tapped label as text; ``edit`` messages are ``Ignored`` (acklog tracks
  delivery, not content). In-payload duplicates are kept: folding is idempotent.
* Echoes carry no status, so they emit no ``StatusReported``. Meta has no event id.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from projections.facts import (
    DecodeError,
    Direction,
    Fact,
    FailureClass,
    Ignored,
    MessageDeleted,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers._common import (
    Id,
    Stamp,
    bounded_epoch,
    bounded_id,
    parse_json,
    parse_part,
)
from projections.providers.base import FailureTable, Provider, Signature
from projections.providers.simulation import (
    Ack,
    Builder,
    Failure,
    Msg,
    Request,
    Step,
    encode,
    now,
)

#: ``statuses[].status`` → canonical outgoing status (``deleted`` is a deletion, see below).
STATUS: dict[str, OutgoingStatus] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "played",
    "failed": "not_sent",
}

#: On-Premises API legacy status: the message was deleted.
DELETED = "deleted"

#: ``messages[].type`` → message kind (anything else is ``other``).
KIND: dict[str, str] = {
    "text": "text",
    "image": "image",
    "audio": "audio",
    "video": "video",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "contacts": "contact",
    "reaction": "reaction",
    "voice": "voice",  # On-Premises API
    "system": "system",
    "request_welcome": "request_welcome",  # a user opened the chat: no one wrote it
}

#: The ``object`` every WhatsApp Business Account webhook carries.
WABA = "whatsapp_business_account"

#: ``changes[].field`` values whose ``value`` holds messages/statuses.
MESSAGE_FIELDS = ("messages", "smb_message_echoes")


class _Struct(msgspec.Struct, frozen=True):
    pass


class _Text(_Struct, frozen=True):
    body: str | None = None


class _Media(_Struct, frozen=True):
    id: Id = None
    link: str | None = None
    url: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool | None = None


class _Location(_Struct, frozen=True):
    name: str | None = None
    address: str | None = None


class _ContactName(_Struct, frozen=True):
    formatted_name: str | None = None


class _Contact(_Struct, frozen=True):
    name: _ContactName | None = None


class _Reaction(_Struct, frozen=True):
    message_id: str | None = None
    emoji: str | None = None


class _Context(_Struct, frozen=True):
    id: str | None = None


class _Button(_Struct, frozen=True):
    text: str | None = None


class _Reply(_Struct, frozen=True):
    title: str | None = None


class _Interactive(_Struct, frozen=True):
    button_reply: _Reply | None = None
    list_reply: _Reply | None = None


class _System(_Struct, frozen=True):
    body: str | None = None


class _Original(_Struct, frozen=True):
    """``revoke`` and ``edit`` both point at the message they change."""

    original_message_id: Id = None


class _Message(_Struct, frozen=True):
    id: Id = None
    sender: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    group_id: str | None = None
    timestamp: Stamp = None
    type: str | None = None
    context: _Context | None = None
    text: _Text | None = None
    image: _Media | None = None
    audio: _Media | None = None
    video: _Media | None = None
    document: _Media | None = None
    sticker: _Media | None = None
    voice: _Media | None = None  # On-Premises API
    location: _Location | None = None
    contacts: list[_Contact] | None = None
    reaction: _Reaction | None = None
    button: _Button | None = None
    interactive: _Interactive | None = None
    system: _System | None = None
    revoke: _Original | None = None
    edit: _Original | None = None


class _ErrorData(_Struct, frozen=True):
    details: str | None = None


class _Error(_Struct, frozen=True):
    code: Id = None
    title: str | None = None
    message: str | None = None
    error_data: _ErrorData | None = None


class _Status(_Struct, frozen=True):
    id: Id = None
    status: str | None = None
    timestamp: Stamp = None
    recipient_participant_id: str | None = None
    #: the customer's wa_id (or the group's id): an outgoing message's chat, which a status
    #: is often the only report of (messages we send are not echoed unless asked for)
    recipient_id: str | None = None
    errors: list[_Error] | None = None


class _Value(_Struct, frozen=True):
    statuses: list[_Status] | None = None
    messages: list[_Message] | None = None
    message_echoes: list[_Message] | None = None
    errors: list[_Error] | None = None


class _Change(_Struct, frozen=True):
    field: str | None = None
    # The shape of ``value`` depends on ``field``: decoded only for the fields acklog folds.
    value: msgspec.Raw = msgspec.Raw()


class _Entry(_Struct, frozen=True):
    changes: list[_Change] | None = None


class _Webhook(_Struct, frozen=True):
    object: str | None = None
    entry: list[_Entry] | None = None
    # the On-Premises API's bare value
    statuses: msgspec.Raw = msgspec.Raw()
    messages: msgspec.Raw = msgspec.Raw()
    errors: msgspec.Raw = msgspec.Raw()


def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]:
    """Decode one Cloud API webhook (all entries, changes and elements) into facts."""
    hook = parse_json(body, _Webhook)
    if hook.object is not None and hook.object != WABA:
        return [
            Ignored(reason=f"object {hook.object[:64]!r} is not {WABA!r}", event=hook.object[:64])
        ]
    if hook.entry is None and hook.object is None and _on_premises(hook):
        bare = _value(parse_json(body, _Value), "")
        return bare or [Ignored(reason="On-Premises webhook carries no elements")]
    if hook.entry is None:
        raise DecodeError(
            "invalid_payload", "entry: missing (Meta batches every change in entry[])"
        )
    facts: list[Fact] = []
    for i, entry in enumerate(hook.entry):
        if entry.changes is None:
            raise DecodeError("invalid_payload", f"entry[{i}].changes: missing")
        for j, change in enumerate(entry.changes):
            facts.extend(_change(change, f"entry[{i}].changes[{j}]"))
    return facts or [Ignored(reason="webhook carries no changes")]


def _change(change: _Change, where: str) -> list[Fact]:
    field = change.field
    if field is None:
        raise DecodeError("invalid_payload", f"{where}.field: missing")
    if field not in MESSAGE_FIELDS:
        return [Ignored(reason=f"change field {field[:64]!r} is not folded", event=field[:64])]
    facts = _value(parse_part(change.value, _Value, f"{where}.value"), f"{where}.value.")
    if not facts:
        facts.append(Ignored(reason="change carries no statuses, messages or errors", event=field))
    return facts


def _on_premises(hook: _Webhook) -> bool:
    """A bare On-Premises body: one of its arrays at the top level."""
    return any(len(raw) > 0 for raw in (hook.statuses, hook.messages, hook.errors))


def _value(value: _Value, base: str) -> list[Fact]:
    """Every element of a ``value`` (``base`` is its path with a trailing dot, or "")."""
    facts: list[Fact] = []
    for k, status in enumerate(value.statuses or ()):
        facts.append(_status(status, f"{base}statuses[{k}]"))
    for k, message in enumerate(value.messages or ()):
        facts.append(_message(message, "incoming", f"{base}messages[{k}]"))
    for k, echo in enumerate(value.message_echoes or ()):
        facts.append(_message(echo, "outgoing", f"{base}message_echoes[{k}]"))
    for error in value.errors or ():
        code, text = _error(error, f"{base}errors[]")
        facts.append(
            Ignored(
                reason=f"out-of-band error without a message id: {code}: {text}", event="errors"
            )
        )
    return facts


def _status(status: _Status, where: str) -> Fact:
    key = bounded_id(status.id, f"{where}.id")
    raw = status.status
    if raw is None or not raw:
        raise DecodeError("invalid_payload", f"{where}.status: missing")
    when = bounded_epoch(status.timestamp, f"{where}.timestamp")
    if raw == DELETED:
        return MessageDeleted(key=key, raw=raw, direction="outgoing", provider_time=when)
    canonical = STATUS.get(raw)
    if canonical is None:
        return Ignored(
            reason=f"{where}.status {raw[:64]!r} is not a known status", event="statuses"
        )
    code, text = _error(status.errors[0], f"{where}.errors[0]") if status.errors else (None, None)
    return StatusReported(
        key=key,
        status=canonical,
        raw=raw,
        provider_time=when,
        participant=status.recipient_participant_id or None,
        error_code=code,
        error_text=text,
        chat=status.recipient_id or None,
    )


def _message(message: _Message, direction: Direction, where: str) -> Fact:
    when = bounded_epoch(message.timestamp, f"{where}.timestamp")
    if message.type == "revoke":
        original = message.revoke.original_message_id if message.revoke else None
        key = bounded_id(original, f"{where}.revoke.original_message_id")
        return MessageDeleted(key=key, raw="revoke", direction=direction, provider_time=when)
    if message.type == "edit":
        return Ignored(reason="message edit (acklog tracks delivery, not content)", event="edit")
    key = bounded_id(message.id, f"{where}.id")
    kind = KIND.get(message.type or "", "other")
    media = _media(message)
    if kind == "audio" and media is not None and media.voice:
        kind = "voice"
    quoted = message.context.id if message.context else None
    if message.reaction is not None:
        quoted = message.reaction.message_id or quoted
    if direction == "incoming":
        chat = message.group_id or message.sender
    else:
        chat = message.group_id or message.to
    return MessageObserved(
        key=key,
        direction=direction,
        chat=chat or None,
        sender=message.sender or None,
        kind=kind,
        text=_text(message, media),
        media=_media_ref(media, f"{where}.{message.type}.id"),
        quoted=quoted or None,
        provider_time=when,
    )


def _media(message: _Message) -> _Media | None:
    candidates = {
        "image": message.image,
        "audio": message.audio,
        "video": message.video,
        "document": message.document,
        "sticker": message.sticker,
        "voice": message.voice,
    }
    return candidates.get(message.type or "")


def _media_ref(media: _Media | None, field: str) -> str | None:
    if media is None:
        return None
    if media.id is not None:
        return bounded_id(media.id, field)
    return media.link or media.url or None


def _text(message: _Message, media: _Media | None) -> str | None:
    candidates: list[str | None] = [
        message.text.body if message.text else None,
        media.caption if media else None,
        message.reaction.emoji if message.reaction else None,
        message.button.text if message.button else None,
        message.system.body if message.system else None,
    ]
    if message.interactive is not None:
        for reply in (message.interactive.button_reply, message.interactive.list_reply):
            candidates.append(reply.title if reply else None)
    if message.location is not None:
        place = [p for p in (message.location.name, message.location.address) if p]
        candidates.append(", ".join(place))
    if message.contacts:
        names = [c.name.formatted_name for c in message.contacts if c.name]
        candidates.append(", ".join(n for n in names if n))
    return next((text for text in candidates if text), None)


def _error(error: _Error, where: str) -> tuple[str | None, str | None]:
    code = None if error.code is None else bounded_id(error.code, f"{where}.code")
    parts: list[str] = []
    details = error.error_data.details if error.error_data else None
    for part in (error.title, error.message, details):
        if part and part not in parts:
            parts.append(part)
    return code, ": ".join(parts) or None


# -- signature ---------------------------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of the raw body under the app secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


SIGNATURE = Signature(
    header="X-Hub-Signature-256",
    sign=lambda secret, request: signature(secret, request.body),
    hex=True,
)


# -- failure codes (projections.failures.classify) ---------------------------------------------

#: Meta WhatsApp Cloud API codes (and the On-Premises API's older codes)
FAILURE_CODES: dict[str, FailureClass] = {
    # Authorization and permission (Graph API)
    "0": "configuration",  # AuthException
    "3": "configuration",  # API method: capability or permission
    "10": "configuration",  # permission denied
    "190": "configuration",  # access token expired
    "4": "rate_limited",  # API too many calls
    "80007": "rate_limited",  # rate limit issues (WABA)
    "130429": "rate_limited",  # rate limit hit (Cloud API throughput)
    "131048": "rate_limited",  # spam rate limit hit
    "131056": "rate_limited",  # (business, consumer) pair rate limit hit
    "133016": "rate_limited",  # account register/deregister rate limit exceeded
    "368": "account_restricted",  # temporarily blocked for policies violations
    "130497": "account_restricted",  # business account restricted from messaging this country
    "131031": "account_restricted",  # account has been locked
    "131037": "configuration",  # number needs display name approval
    "130472": "experiment",  # user's number is part of an experiment
    "131000": "provider_error",  # something went wrong
    "131016": "provider_error",  # service unavailable
    "131057": "provider_error",  # account in maintenance mode
    "133004": "provider_error",  # server temporarily unavailable
    "131005": "configuration",  # access denied
    "131045": "configuration",  # incorrect certificate (number not registered)
    "133000": "configuration",  # incomplete deregistration
    "133005": "configuration",  # two-step verification PIN mismatch
    "133006": "configuration",  # phone number re-verification needed
    "133008": "rate_limited",  # too many two-step verification PIN guesses
    "133009": "rate_limited",  # two-step verification PIN guessed too fast
    "133010": "configuration",  # phone number not registered
    "100": "invalid_request",  # invalid parameter
    "131008": "invalid_request",  # required parameter is missing
    "131009": "invalid_request",  # parameter value is not valid
    "131021": "invalid_request",  # recipient cannot be sender
    "131026": "not_on_whatsapp",  # message undeliverable (no WhatsApp, old app, terms)
    "131042": "payment",  # business eligibility payment issue
    "131047": "outside_window",  # re-engagement message: more than 24 h since the last reply
    "131049": "frequency_capped",  # not delivered to maintain healthy ecosystem engagement
    "131050": "opted_out",  # user stopped marketing messages
    "131051": "content_rejected",  # unsupported message type
    "131052": "media_error",  # media download error
    "131053": "media_error",  # media upload error
    "132000": "content_rejected",  # template parameter count mismatch
    "132001": "content_rejected",  # template does not exist
    "132005": "content_rejected",  # template hydrated text too long
    "132007": "content_rejected",  # template format character policy violated
    "132012": "content_rejected",  # template parameter format mismatch
    "132015": "content_rejected",  # template is paused
    "132016": "content_rejected",  # template is disabled
    "132068": "content_rejected",  # flow is blocked
    "132069": "content_rejected",  # flow is throttled
    # On-Premises API codes (still relayed by some BSPs; Twilio maps them, see below)
    "402": "payment",  # business eligibility payment issue
    "408": "expired",  # message expired (time to live)
    "410": "expired",  # message expired
    "429": "rate_limited",  # too many requests
    "430": "configuration",  # certificate error
    "432": "configuration",  # certificate ID mismatch
    "433": "configuration",  # certificate signature invalid
    "470": "outside_window",  # re-engagement message (more than 24 h)
    "471": "rate_limited",  # spam rate limit hit
    "472": "experiment",  # user's number is part of an experiment
    "500": "provider_error",  # generic internal error
    "1000": "provider_error",  # generic error
    "1001": "content_rejected",  # message too long
    "1005": "configuration",  # access denied
    "1006": "not_on_whatsapp",  # resource (contact) not found
    "1008": "invalid_request",  # required parameter is missing
    "1009": "invalid_request",  # parameter value is not valid
    "1011": "provider_error",  # service not ready
    "1013": "not_on_whatsapp",  # user is not valid
    "1014": "provider_error",  # internal error
    "1015": "rate_limited",  # too many requests
    "1021": "invalid_request",  # bad user: message to yourself
    "1026": "not_on_whatsapp",  # receiver incapable
    "2000": "content_rejected",  # template parameter count mismatch
    "2001": "content_rejected",  # template missing
    "2002": "content_rejected",  # template hydration failed
    "2003": "content_rejected",  # template missing for language
}

FAILURES = FailureTable(
    codes=FAILURE_CODES,
    statuses={},
    ranges=(
        (200, 299, "configuration"),  # API permission errors
        (132000, 132099, "content_rejected"),  # template and flow errors
    ),
    sources=(
        "https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/",
        "https://www.twilio.com/docs/whatsapp/api/error-code-mapping (On-Premises codes)",
    ),
)


# -- acklog simulate ---------------------------------------------------------------------------

#: the failure in shared/samples/meta_cloud/status_failed_130472.json
_SIM_ERROR: dict[str, Any] = {
    "code": 130472,
    "title": "User's number is part of an experiment",
    "message": "User's number is part of an experiment",
    "error_data": {
        "details": "Failed to send message because this user's phone number is part of an"
        " experiment"
    },
    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
}


class Simulator(Builder):
    """Meta WhatsApp Cloud API bodies (shapes: shared/samples/meta_cloud/*): the
    ``whatsapp_business_account`` envelope with ``messages[]`` or ``statuses[]``."""

    cannot: ClassVar[dict[Step, str]] = {
        "outgoing": "the Cloud API posts no webhook for messages sent through it; the first"
        " status creates the message",
        "instance": "the Cloud API sends no connection events for a phone number",
    }

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.waba_id = self.ids.digits(15)
        self.phone_number_id = self.ids.digits(15)
        self.conversations: dict[str, str] = {}

    def _envelope(self, value: dict[str, Any]) -> bytes:
        metadata = {"display_phone_number": self.me, "phone_number_id": self.phone_number_id}
        change = {
            "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
            "field": "messages",
        }
        return encode(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": self.waba_id, "changes": [change]}],
            }
        )

    def incoming(self) -> tuple[Msg, Request]:
        contact = self.ids.phone()
        msg = Msg(key=self.ids.wamid(contact), contact=contact, text=self.texts()[0])
        value = {
            "contacts": [{"profile": {"name": "Simulated Contact"}, "wa_id": contact}],
            "messages": [
                {
                    "from": contact,
                    "id": msg.key,
                    "timestamp": str(int(now())),
                    "type": "text",
                    "text": {"body": msg.text},
                }
            ],
        }
        return msg, Request(body=self._envelope(value), raw="messages[] text")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        return Msg(key=self.ids.wamid(contact), contact=contact, text=self.texts()[1])

    def _status(self, msg: Msg, status: str, **extra: Any) -> bytes:
        entry: dict[str, Any] = {
            "id": msg.key,
            "status": status,
            "timestamp": str(int(now())),
            "recipient_id": msg.contact,
            **extra,
        }
        return self._envelope({"statuses": [entry]})

    def ack(self, msg: Msg, status: Ack) -> Request:
        conversation = self.conversations.setdefault(msg.key, self.ids.hex(30, upper=False))
        origin = {"id": conversation, "origin": {"type": "service"}}
        if status == "sent":
            origin["expiration_timestamp"] = str(int(now()) + 86400)
        pricing = {"billable": True, "pricing_model": "CBP", "category": "service"}
        body = self._status(msg, status, conversation=origin, pricing=pricing)
        return Request(body=body, raw=f"statuses[] {status}")

    def failure(self, msg: Msg) -> Failure:
        body = self._status(msg, "failed", errors=[_SIM_ERROR])
        request = Request(body=body, raw=f"statuses[] failed {_SIM_ERROR['code']}")
        return Failure(request=request, code=str(_SIM_ERROR["code"]))


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(
    name="meta",
    decode=decode,
    signature=SIGNATURE,
    failures=FAILURES,
    simulator=Simulator,
)
