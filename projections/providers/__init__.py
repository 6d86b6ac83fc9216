"""Decoder registry: provider name → module with ``decode`` (and optionally ``event_id``).

Every provider module exposes::

    def decode(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> list[Fact]
    def event_id(body: bytes) -> str | None      # optional; the provider's own event id

``decode`` is pure and raises nothing but :class:`projections.facts.DecodeError`.
Modules are imported on first use so ingest, which needs only ``event_id``, stays light.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Mapping
from functools import cache
from types import ModuleType

from projections.facts import DecodeError, Fact

PROVIDERS: tuple[str, ...] = (
    "wamm",
    "whatsgate",
    "chatapi",
    "whatsable",
    "qikchat",
    "meta",
    "waha",
    "evolution",
    "greenapi",
    "twilio",
    "zapi",
)

Decoder = Callable[[bytes, str | None, Mapping[str, str]], list[Fact]]


class UnknownProvider(KeyError):
    """Raised for a provider name acklog has no decoder for."""


@cache
def _module(provider: str) -> ModuleType:
    if provider not in PROVIDERS:
        raise UnknownProvider(provider)
    return importlib.import_module(f"projections.providers.{provider}")


def decoder(provider: str) -> Decoder:
    fn: Decoder = _module(provider).decode
    return fn


def decode(
    provider: str, body: bytes, content_type: str | None, headers: Mapping[str, str]
) -> list[Fact]:
    """Decode one stored event; a decoder bug is reported as a DecodeError, never raised raw.

    The safety net keeps one bad payload from stalling the projector (invariant 6); the
    decoder tests prove the net is never needed for well-behaved decoders.
    """
    try:
        return decoder(provider)(_decoded(body, headers), content_type, headers)
    except DecodeError:
        raise
    except UnknownProvider:
        raise DecodeError("unknown_provider", f"no decoder for provider {provider!r}") from None
    except Exception as exc:  # the net: reasons stay precise, the projector moves on
        raise DecodeError(
            "decoder_bug", f"decoder error: {type(exc).__name__}: {exc}"[:500]
        ) from None


#: a compressed body is stored as received; decoders see it decompressed, up to this size
MAX_DECODED = 16 * 1024 * 1024


def _decoded(body: bytes, headers: Mapping[str, str]) -> bytes:
    """``body`` without the Content-Encoding it was received with (gzip or deflate)."""
    encoding = headers.get("content-encoding")
    if not encoding:
        return body
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15}.get(encoding.strip().lower())
    if wbits is None:
        raise DecodeError("invalid_payload", f"unsupported Content-Encoding {encoding[:32]!r}")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, MAX_DECODED)
    except zlib.error as exc:
        raise DecodeError(
            "invalid_payload", f"body does not decompress as {encoding[:32]}: {exc}"
        ) from None
    if inflater.unconsumed_tail:
        raise DecodeError("invalid_payload", f"decompressed body exceeds {MAX_DECODED} bytes")
    return out


def event_id(provider: str, body: bytes) -> str | None:
    """The provider's own event id, used as the dedup key (None when it has none)."""
    fn: Callable[[bytes], str | None] | None = getattr(_module(provider), "event_id", None)
    if fn is None:
        return None
    try:
        return fn(body)
    except Exception:  # a hot-path helper must never fail a webhook
        return None
