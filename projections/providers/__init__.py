"""The provider registry: every module (or package) here exports one ``PROVIDER``.

``PROVIDERS`` is found, not written: the names of this package's modules and packages,
sorted, but for the ``_private`` ones and :data:`SHARED` (what the providers share). So a
provider is added by adding its module, and nothing else (docs/adding-a-provider.md). A
module is imported on first use (:func:`get`), so ingest loads only the providers of its
channels. What a ``PROVIDER`` carries is :class:`projections.providers.base.Provider`.

``decode`` is pure and raises nothing but :class:`projections.facts.DecodeError`.
"""

from __future__ import annotations

import importlib
import pkgutil
import zlib
from collections.abc import Mapping
from functools import cache

from projections.facts import DecodeError, Fact
from projections.providers.base import Decoder, Provider

__all__ = [
    "MAX_DECODED",
    "PROVIDERS",
    "SHARED",
    "Decoder",
    "Provider",
    "UnknownProvider",
    "decode",
    "decoder",
    "event_id",
    "find",
    "get",
]

#: modules of this package that are no provider: what the providers share
SHARED = frozenset({"base", "simulation"})


def _discover() -> tuple[str, ...]:
    names = (m.name for m in pkgutil.iter_modules(__path__))
    return tuple(sorted(n for n in names if not n.startswith("_") and n not in SHARED))


#: every provider acklog has a module for, by name (a channel's ``provider``)
PROVIDERS: tuple[str, ...] = _discover()


class UnknownProvider(KeyError):
    """Raised for a provider name acklog has no decoder for."""


@cache
def get(provider: str) -> Provider:
    """The ``PROVIDER`` of module ``provider`` (imported now, the first time)."""
    if provider not in PROVIDERS:
        raise UnknownProvider(provider)
    module = importlib.import_module(f"{__name__}.{provider}")
    found = getattr(module, "PROVIDER", None)
    if not isinstance(found, Provider) or found.name != provider:
        raise TypeError(f"{module.__name__} must export PROVIDER = Provider(name={provider!r}, …)")
    return found


def find(provider: str) -> Provider | None:
    """:func:`get`, or None for a provider acklog does not know."""
    try:
        return get(provider)
    except UnknownProvider:
        return None


def decoder(provider: str) -> Decoder:
    return get(provider).decode


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
    fn = get(provider).event_id
    if fn is None:
        return None
    try:
        return fn(body)
    except Exception:  # a hot-path helper must never fail a webhook
        return None
