"""What a provider module exports: ``PROVIDER``, one :class:`Provider` carrying all acklog knows.

A provider is one module (or package) of ``projections/providers/``; the registry
(``projections.providers``) finds it by its name and reads everything from its ``PROVIDER``:
the decoder, the event id, the signature, the answer, the failure codes and the simulator.
Everything here is pure (no aiohttp, no I/O): ingest, the fold and ``acklog simulate`` call
it (docs/adding-a-provider.md).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from projections.facts import Fact, FailureClass
from projections.providers.simulation import Builder

#: ``decode(body, content_type, headers)``: the facts of one stored event; raises nothing but
#: ``projections.facts.DecodeError``.
Decoder = Callable[[bytes, str | None, Mapping[str, str]], list[Fact]]
#: ``event_id(body)``: the provider's own event id (the dedup key), None when it has none.
EventId = Callable[[bytes], str | None]


class Signed(msgspec.Struct, frozen=True):
    """What a signature covers, as received."""

    headers: Mapping[str, str]
    body: bytes
    url: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Signature:
    """How a provider signs its webhooks: the header, and the value it must hold.

    ``verify`` calls ``sign`` and compares in constant time (invariant 10; the habit of
    standardwebhooks: one definition of the MAC serves the check and the simulator).
    """

    #: the header the signature comes in
    header: str
    #: the value ``header`` must hold under ``secret``; None when the request cannot be
    #: signed this way (an algorithm we do not accept never verifies)
    sign: Callable[[str, Signed], str | None]
    #: a hex digest: compared in either case
    hex: bool = False
    #: the URL is signed too (ingest builds it only then: it costs ~4 µs per webhook)
    covers_url: bool = False
    #: headers the provider sends beside the signature (the simulator sends them too)
    companions: Mapping[str, str] = field(default_factory=dict)

    def normalize(self, given: str) -> str:
        return given.strip().lower() if self.hex else given.strip()

    def verify(self, secret: str, given: str, request: Signed) -> bool:
        expected = self.sign(secret, request)
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode(), self.normalize(given).encode())

    def headers(self, secret: str, url: str, body: bytes) -> dict[str, str]:
        """The headers the provider itself would add to ``body`` posted to ``url``."""
        value = self.sign(secret, Signed(self.companions, body, url))
        if value is None:
            raise ValueError(f"{self.header}: cannot sign with {dict(self.companions)!r}")
        return {self.header: value, **self.companions}


class Receipt(NamedTuple):
    """What ingest knows of a webhook once it is committed."""

    #: the provider's event id (None when it has none)
    event_id: str | None
    position: int
    #: the position of the first copy when this one is a duplicate
    duplicate_of: int | None


class Reply(NamedTuple):
    """The answer a provider needs (ingest's own JSON answer when it needs none)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


#: ``answer(receipt)``: the reply a provider needs to stop retrying.
Answer = Callable[[Receipt], Reply]


class FailureTable(NamedTuple):
    """A provider's failure codes → class (``projections.failures.classify`` reads them)."""

    #: error code (as the decoder reports it, a string) → class
    codes: dict[str, FailureClass]
    #: raw failure status → class, when the status itself says why
    statuses: dict[str, FailureClass]
    #: inclusive code ranges → class, looked at after ``codes``
    ranges: tuple[tuple[int, int, FailureClass], ...]
    #: where the table comes from
    sources: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Provider:
    """One provider, as its module exports it (``PROVIDER``)."""

    #: the registry's name: the module's (or package's) name, a channel's ``provider``
    name: str
    #: stored bytes → canonical facts (pure; raises only DecodeError)
    decode: Decoder
    #: the payload builder of ``acklog simulate``
    simulator: type[Builder]
    #: the provider's own event id, for deduplication (None: the body's hash is the key)
    event_id: EventId | None = None
    #: how its webhooks are signed (None: it signs nothing; tokens authenticate it)
    signature: Signature | None = None
    #: the reply it needs (None: ingest's ``{"status": "stored", …}``)
    answer: Answer | None = None
    #: its failure codes (None: its failures are classified by their text alone)
    failures: FailureTable | None = None
