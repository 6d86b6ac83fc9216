"""What ``acklog simulate`` asks of a provider: a payload builder, and the ids it draws.

Each provider module defines a :class:`Builder` subclass and names it in its ``PROVIDER``
(``simulator=``); ``service.cli.simulate`` plans the scenarios and posts the bodies. The
scenarios only ever ask for a handful of steps (an incoming message, our outgoing message, an
ack, a failure, the instance going down or up); a provider that cannot report a step names it
in ``cannot`` with the reason, and the scenario skips the step and prints the reason instead
of inventing a payload.

Ids must be new on every run: the log deduplicates by the provider's event id or by the
body's hash, so a reused id would turn a new simulation into "duplicates" of an old one. A
seed makes a run repeatable on purpose (same ids, same bodies). Pure: no I/O but the clock.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import random
import string
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import msgspec

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_ALNUM = string.ascii_letters + string.digits


class Ids:
    """Fresh, WhatsApp-like ids for simulated webhooks, all drawn from one seeded generator."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)  # None: seeded from the OS, a fresh run every time
        self._serial = itertools.count(self.rng.randrange(10_000, 10_000_000))

    def hex(self, n: int, *, upper: bool = True) -> str:
        text = "".join(self.rng.choice("0123456789abcdef") for _ in range(n))
        return text.upper() if upper else text

    def digits(self, n: int) -> str:
        return str(self.rng.randrange(10 ** (n - 1), 10**n))

    def alnum(self, n: int, alphabet: str = _ALNUM) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def serial(self) -> int:
        """Increasing integers (WhatsGate event ids, Chat API message numbers, WAMM ids)."""
        return next(self._serial)

    def phone(self) -> str:
        """A number in the fictional +1 555 range, digits only."""
        return "1555" + self.digits(7)

    def web_id(self) -> str:
        """The hex id WhatsApp Web / multi-device clients give the messages they send."""
        return "3EB0" + self.hex(18)

    def phone_id(self) -> str:
        """The 32-hex id a phone gives its messages (what incoming messages carry)."""
        return self.hex(32)

    def serialized(self, from_me: bool, chat: str, msg_id: str) -> str:
        """whatsapp-web.js ``id._serialized``: ``{fromMe}_{chat}_{id}``."""
        return f"{'true' if from_me else 'false'}_{chat}_{msg_id}"

    def wamid(self, phone: str) -> str:
        """A Cloud API message id: ``wamid.`` + base64 of a small protobuf naming the chat."""
        raw = b"\x1c\x18" + bytes([len(phone)]) + phone.encode() + b"\x15\x02\x00\x11\x18\x12"
        return "wamid." + base64.b64encode(raw + self.hex(18).encode() + b"\x00").decode()

    def twilio_sid(self, prefix: str = "SM") -> str:
        return prefix + self.hex(32, upper=False)

    def ulid(self) -> str:
        """26 Crockford base32 characters, lower case (WAHA's ``evt_…`` event ids)."""
        return self.alnum(26, _CROCKFORD)


Ack = Literal["sent", "delivered", "read"]
Step = Literal["outgoing", "failure", "instance"]

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """One webhook body as the provider would POST it."""

    body: bytes
    #: the provider's own words for what this body says (``message.ack 3 READ``)
    raw: str
    content_type: str = JSON


class Msg(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated message: the key acklog will file it under and who it is with."""

    key: str
    contact: str
    text: str
    #: a second provider id where the provider has one (Evolution's row id, Z-API's zaapId)
    ref: str = ""


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    request: Request
    #: the error code the payload carries (None when the provider gives no code)
    code: str | None = None


class Builder:
    """Base of the per-provider builders; ``ids`` draws every id, ``me`` is our own number."""

    #: steps this provider cannot report, with the reason shown to the user
    cannot: ClassVar[Mapping[Step, str]] = {}
    #: assumptions worth showing next to the output (documented gaps we filled)
    notes: ClassVar[tuple[str, ...]] = ()
    #: True when a failed message gets its failure webhook *instead of* the outgoing one
    failure_replaces_outgoing: ClassVar[bool] = False
    #: the state the outgoing-message webhook itself implies (Z-API reports it once sent)
    announced_state: ClassVar[str] = "sending"

    def __init__(self, ids: Ids, url: str = "") -> None:
        self.ids = ids
        self.url = url
        self.me = ids.phone()

    # -- steps ------------------------------------------------------------------------------
    def incoming(self) -> tuple[Msg, Request]:
        raise NotImplementedError

    def new_outgoing(self) -> Msg:
        """A fresh outgoing message (its key), before any webhook mentions it."""
        raise NotImplementedError

    def outgoing(self, msg: Msg) -> Request:
        """The webhook announcing our own message, for providers that echo what we send."""
        raise NotImplementedError

    def ack(self, msg: Msg, status: Ack) -> Request:
        raise NotImplementedError

    def failure(self, msg: Msg) -> Failure:
        raise NotImplementedError

    def instance(self, up: bool) -> Request:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------
    def texts(self) -> tuple[str, str]:
        """An incoming and an outgoing text that name one order, so a run reads like a chat."""
        order = self.ids.digits(6)
        return f"Hi, where is my order {order}?", f"Your order {order} has shipped."


def encode(data: Any) -> bytes:
    return msgspec.json.encode(data)


def now() -> float:
    return time.time()


def iso(at: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` (WhatsAble, Qikchat, Evolution)."""
    stamp = dt.datetime.fromtimestamp(at, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def naive(at: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` without a zone (WAMM, WhatsGate)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
