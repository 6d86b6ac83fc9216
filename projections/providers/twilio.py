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

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

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
from projections.providers.base import FailureTable, Provider, Signature
from projections.providers.simulation import FORM, Ack, Builder, Failure, Msg, Request, Step

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


# -- signature ---------------------------------------------------------------------------------


def signature(secret: str, url: str, body: bytes) -> str:
    """Base64 HMAC-SHA1 over the full URL plus each form key and value, keys sorted."""
    params = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    data = url + "".join(k + v for k, v in sorted(params))
    mac = hmac.new(secret.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


SIGNATURE = Signature(
    header="X-Twilio-Signature",
    sign=lambda secret, request: signature(secret, request.url, request.body),
    covers_url=True,
)


# -- failure codes (projections.failures.classify) ---------------------------------------------

#: Twilio (WhatsApp and Messaging) error codes
FAILURES = FailureTable(
    codes={
        "30001": "rate_limited",  # queue overflow
        "30002": "account_restricted",  # account suspended
        "30003": "not_on_whatsapp",  # unreachable destination handset
        "30004": "opted_out",  # message blocked (the recipient blocked you)
        "30005": "not_on_whatsapp",  # unknown destination handset
        "30006": "not_on_whatsapp",  # landline or unreachable carrier
        "30007": "content_rejected",  # message filtered (carrier violation)
        "30008": "unknown",  # unknown error
        "30009": "provider_error",  # missing segment
        "30010": "payment",  # message price exceeds max price
        "21211": "invalid_request",  # invalid 'To' phone number
        "21408": "configuration",  # permission to send to this region not enabled
        "21610": "opted_out",  # attempt to send to an unsubscribed recipient (STOP)
        "21614": "not_on_whatsapp",  # 'To' is not a valid mobile number
        "63001": "configuration",  # channel could not authenticate the request
        "63003": "not_on_whatsapp",  # channel could not find the To address
        "63005": "content_rejected",  # channel did not accept the content
        "63007": "configuration",  # no channel with the From address
        "63010": "provider_error",  # channel internal error
        "63012": "provider_error",  # channel provider returned an internal error
        "63013": "content_rejected",  # channel policy violation
        "63016": "outside_window",  # free-form message outside the allowed window
        "63018": "rate_limited",  # rate limit exceeded for the channel
        "63019": "media_error",  # media failed to download
        "63020": "payment",  # Business Manager account / eligibility payment (WhatsApp 402)
        "63021": "content_rejected",  # channel invalid content
        "63022": "configuration",  # invalid vname certificate
        "63024": "not_on_whatsapp",  # invalid message recipient
        "63025": "invalid_request",  # resource already exists
        "63027": "content_rejected",  # template does not exist for the language
        "63028": "content_rejected",  # number of template parameters mismatch
        "63029": "content_rejected",  # receiver failed to meet the template's requirements
        "63030": "invalid_request",  # unsupported parameter for the type of channel message
        "63031": "invalid_request",  # From and To are the same
        "63032": "experiment",  # user's number is part of an experiment (WhatsApp 472)
        "63038": "rate_limited",  # daily messaging limit reached
        "63049": "frequency_capped",  # Meta chose not to deliver the marketing message
        "63051": "account_restricted",  # WhatsApp Business Account locked
    },
    statuses={},
    ranges=(),
    sources=(
        "https://www.twilio.com/docs/api/errors (each code's page, e.g. /docs/api/errors/63016)",
        "https://www.twilio.com/docs/whatsapp/api/error-code-mapping",
    ),
)


# -- acklog simulate ---------------------------------------------------------------------------

#: the failure in shared/samples/twilio/status_failed_63018_rate_limit.json
_SIM_ERROR_CODE = "63018"

#: WhatsApp status callbacks name the event too (``EventType=DELIVERED`` in the samples)
_SIM_EVENT: dict[str, str] = {"delivered": "DELIVERED", "read": "READ"}


class Simulator(Builder):
    """Twilio bodies (shapes: shared/samples/twilio/*): form-encoded status callbacks and the
    incoming-message webhook of a WhatsApp sender."""

    cannot: ClassVar[dict[Step, str]] = {
        "instance": "Twilio sends no connection events for a WhatsApp sender",
    }
    notes = ("the outgoing message shows up as its first status callback (queued)",)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.account = self.ids.twilio_sid("AC")
        self.channel_install = self.ids.twilio_sid("XE")

    def _form(self, fields: dict[str, str]) -> Request:
        status = fields.get("MessageStatus")
        raw = f"MessageStatus={status}" if status else f"SmsStatus={fields.get('SmsStatus')}"
        return Request(body=urllib.parse.urlencode(fields).encode(), raw=raw, content_type=FORM)

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.twilio_sid(), contact=self.ids.phone(), text=self.texts()[0])
        request = self._form(
            {
                "SmsMessageSid": msg.key,
                "NumMedia": "0",
                "ProfileName": "Simulated Contact",
                "MessageType": "text",
                "SmsSid": msg.key,
                "WaId": msg.contact,
                "SmsStatus": "received",
                "Body": msg.text,
                "To": f"whatsapp:+{self.me}",
                "NumSegments": "1",
                "ReferralNumMedia": "0",
                "MessageSid": msg.key,
                "AccountSid": self.account,
                "From": f"whatsapp:+{msg.contact}",
                "ApiVersion": "2010-04-01",
            }
        )
        return msg, request

    def new_outgoing(self) -> Msg:
        return Msg(key=self.ids.twilio_sid(), contact=self.ids.phone(), text=self.texts()[1])

    def _status(self, msg: Msg, status: str, **extra: str) -> Request:
        fields = {"EventType": _SIM_EVENT[status]} if status in _SIM_EVENT else {}
        fields |= {
            "SmsSid": msg.key,
            "SmsStatus": status,
            "MessageStatus": status,
            "ChannelToAddress": f"+{msg.contact}",
            "To": f"whatsapp:+{msg.contact}",
            "ChannelPrefix": "whatsapp",
            "MessageSid": msg.key,
            "AccountSid": self.account,
            "From": f"whatsapp:+{self.me}",
            "ApiVersion": "2010-04-01",
            "ChannelInstallSid": self.channel_install,
            **extra,
        }
        return self._form(fields)

    def outgoing(self, msg: Msg) -> Request:
        return self._status(msg, "queued")

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._status(msg, status)

    def failure(self, msg: Msg) -> Failure:
        return Failure(
            request=self._status(msg, "failed", ErrorCode=_SIM_ERROR_CODE), code=_SIM_ERROR_CODE
        )


# -- the provider ------------------------------------------------------------------------------

PROVIDER = Provider(
    name="twilio",
    decode=decode,
    signature=SIGNATURE,
    failures=FAILURES,
    simulator=Simulator,
)
