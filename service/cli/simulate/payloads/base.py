"""What a provider's payload builder offers the scenarios, and how it says what it cannot do.

Each provider module subclasses :class:`Builder`. The scenarios only ever ask for a handful
of steps (an incoming message, our outgoing message, an ack, a failure, the instance going
down or up); a provider that cannot report a step names it in ``cannot`` with the reason, and
the scenario skips the step and prints the reason instead of inventing a payload.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import msgspec

from service.cli.simulate.ids import Ids

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

    name: ClassVar[str]
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
