"""Query-parameter parsing for the API: every bad value becomes a 400 naming its parameter.

Values are checked before they reach PostgreSQL, so a client mistake is never mistaken for a
database outage (a PostgreSQL error answers 503) and never reaches a query at all.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Mapping

import msgspec

from eventstore.channels import NAME_RE
from projections import facts
from projections.facts import RANK
from projections.failures import FAILURE_CLASSES
from projections.rules.message_state import ANOMALIES as ANOMALIES
from projections.rules.message_state import INCOMING_STATES
from service.http.errors import BadParameter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: events carry their bodies (up to ``max_body`` each), so their pages are smaller
MAX_EVENT_LIMIT = 100
MAX_BIGINT = 2**63 - 1

STATES: tuple[str, ...] = tuple(sorted({*RANK, *INCOMING_STATES}))
DIRECTIONS: tuple[str, ...] = ("incoming", "outgoing")
#: ``?origin=``: who wrote an incoming message
ORIGINS: tuple[str, ...] = facts.ORIGINS
#: ``?failure_class=``: the bounded failure vocabulary of ``projections.failures``
FAILURE_CLASS_VALUES: tuple[str, ...] = FAILURE_CLASSES
_TRUE = ("true", "1")
_FALSE = ("false", "0")

_INT = re.compile(r"[+-]?[0-9]{1,19}")
_cursor_decoder = msgspec.json.Decoder(tuple[int, str])
_encoder = msgspec.json.Encoder()


def storable(text: str) -> bool:
    """PostgreSQL text holds no NUL and only valid UTF-8; such a value can match nothing."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def channel_name(value: str) -> bool:
    """Ingest only ever stores channels with valid names, so any other name is unknown."""
    return NAME_RE.fullmatch(value) is not None


def limit(query: Mapping[str, str], default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    value = integer(query, "limit", minimum=1, maximum=maximum)
    return default if value is None else value


def integer(
    query: Mapping[str, str], name: str, *, minimum: int = 0, maximum: int = MAX_BIGINT
) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    value = parse_int(raw, name, minimum=minimum, maximum=maximum)
    return value


def parse_int(raw: str, name: str, *, minimum: int = 0, maximum: int = MAX_BIGINT) -> int:
    if not _INT.fullmatch(raw):
        raise BadParameter(name, f"{name} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise BadParameter(name, f"{name} must be between {minimum} and {maximum}")
    return value


def choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = query.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise BadParameter(name, f"{name} must be one of {', '.join(allowed)}; got {raw[:40]!r}")
    return raw


def boolean(query: Mapping[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadParameter(name, f"{name} must be true or false, got {raw[:40]!r}")


def timestamp(query: Mapping[str, str], name: str) -> dt.datetime | None:
    """ISO-8601; a time without an offset is taken as UTC."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise BadParameter(
            name, f"{name} must be an ISO-8601 time such as 2024-05-01T12:00:00Z"
        ) from None


def channel_filter(query: Mapping[str, str], name: str = "channel") -> str | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not channel_name(raw):
        raise BadParameter(
            name, f"{name} must be a channel name (1-64 letters, digits, '.', '_' or '-')"
        )
    return raw


def encode_cursor(first_position: int, key: str) -> str:
    """Opaque to clients: the keyset position after which the next page starts."""
    raw = _encoder.encode((first_position, key))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(query: Mapping[str, str], name: str = "cursor") -> tuple[int, str] | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        position, key = _cursor_decoder.decode(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeEncodeError, msgspec.DecodeError):
        raise BadParameter(name, f"{name} is not a cursor this API returned") from None
    if not 0 <= position <= MAX_BIGINT or not storable(key):
        raise BadParameter(name, f"{name} is not a cursor this API returned")
    return position, key
