"""Small parsing helpers shared by the decoders, so every one fails the same precise way."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from projections.facts import DecodeError

T = TypeVar("T")

# Epoch values above this are milliseconds (year 2286 in seconds); providers mix both.
_MS_THRESHOLD = 10_000_000_000


def parse_json(body: bytes, type_: type[T]) -> T:
    """Decode and validate ``body`` as ``type_``; any failure becomes a DecodeError."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid payload: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from None
    except (RecursionError, MemoryError):
        raise DecodeError("body is nested too deeply to decode") from None


def parse_form(body: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body (last value of a key wins)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"form body is not valid UTF-8 at byte {exc.start}") from None
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise DecodeError(f"form body cannot be parsed: {exc}") from None
    return dict(pairs)


def epoch(value: Any, field: str) -> float | None:
    """A provider timestamp as epoch seconds (UTC).

    Accepts epoch seconds or milliseconds (int, float or digit string), ISO-8601 with or
    without zone, and ``YYYY-MM-DD HH:MM:SS``. Zone-less times are taken as UTC: they are
    informative only, deadlines run on our own clock (invariant 7).
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DecodeError(f"{field}: expected a timestamp, got a boolean")
    if isinstance(value, int) and not -(10**20) < value < 10**20:
        raise DecodeError(f"{field}: timestamp out of range")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:64])
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise DecodeError(f"{field}: not a timestamp: {value[:64]!r}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.timestamp()
    else:
        raise DecodeError(f"{field}: expected a timestamp, got {type(value).__name__}")
    shown = repr(value)[:64]
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise DecodeError(f"{field}: not a timestamp: {shown}")
    if number > _MS_THRESHOLD:
        number /= 1000.0
    if number > _MS_THRESHOLD:
        raise DecodeError(f"{field}: timestamp out of range: {shown}")
    return number


def text_id(value: Any, field: str) -> str:
    """A provider message id normalised to a non-empty string (ints are common)."""
    if isinstance(value, bool) or value is None:
        raise DecodeError(f"{field}: missing message id")
    if isinstance(value, int):
        if not -(10**40) < value < 10**40:
            raise DecodeError(f"{field}: numeric id out of range")
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DecodeError(f"{field}: expected a non-empty id, got {value!r}"[:200])


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup over a plain mapping."""
    lname = name.lower()
    for key, value in headers.items():
        if key.lower() == lname:
            return value
    return None
