"""Small parsing helpers shared by the decoders, so every one fails the same precise way."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from projections.facts import (
    DecodeError,
    Direction,
    Ignored,
    InstanceStatus,
    OutgoingStatus,
    StatusReported,
)

T = TypeVar("T")

#: A provider id as JSON carries it (ints are common); read with :func:`text_id`.
Id = int | str | None
#: A provider timestamp as JSON carries it (epoch s/ms or text); read with :func:`epoch`.
Stamp = int | float | str | None

#: No provider id, time or code is wider than this; wider JSON ints are refused up front
#: (``str()`` of a huge int raises ValueError, ``float()`` of one overflows).
MAX_INT_BITS = 64

# Epoch values above this are milliseconds (year 2286 in seconds); providers mix both.
_MS_THRESHOLD = 10_000_000_000


def parse_json(body: bytes, type_: type[T]) -> T:
    """Decode and validate ``body`` as ``type_``; any failure becomes a DecodeError."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise DecodeError("invalid_payload", f"invalid payload: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DecodeError("invalid_json", f"body is not valid JSON: {exc}") from None
    except (RecursionError, MemoryError):
        raise DecodeError("too_deep", "body is nested too deeply to decode") from None


def parse_form(body: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body (last value of a key wins)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            "invalid_form", f"form body is not valid UTF-8 at byte {exc.start}"
        ) from None
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise DecodeError("invalid_form", f"form body cannot be parsed: {exc}") from None
    return dict(pairs)


def parse_part(raw: msgspec.Raw, type_: type[T], where: str) -> T:
    """Decode a sub-document kept raw (its shape depends on a sibling field) as ``type_``.

    ``where`` is its path in the webhook (``entry[0].changes[1].value``); every failure names
    it, so the reason points at the full path instead of at ``$`` of the fragment.
    """
    if not raw or bytes(raw) == b"null":
        raise DecodeError("invalid_payload", f"{where}: missing")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("- at `$", f"- at `$.{where}")
        raise DecodeError("invalid_payload", f"invalid payload: {message}") from None
    except (msgspec.DecodeError, RecursionError):
        raise DecodeError("invalid_payload", f"{where}: cannot be decoded") from None


def guard_int(value: object, field: str, what: str = "") -> None:
    """Refuse an int wider than :data:`MAX_INT_BITS`; ``what`` ("id", …) names it in the reason."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        label = f"{what} " if what else ""
        raise DecodeError(
            "invalid_payload", f"{field}: {label}out of range ({value.bit_length()} bits)"
        )


def epoch(value: Any, field: str) -> float | None:
    """A provider timestamp as epoch seconds (UTC).

    Accepts epoch seconds or milliseconds (int, float or digit string), ISO-8601 with or
    without zone, and ``YYYY-MM-DD HH:MM:SS``. Zone-less times are taken as UTC: they are
    informative only, deadlines run on our own clock (invariant 7).
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DecodeError("invalid_payload", f"{field}: expected a timestamp, got a boolean")
    if isinstance(value, int) and not -(10**20) < value < 10**20:
        raise DecodeError("invalid_payload", f"{field}: timestamp out of range")
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
                raise DecodeError(
                    "invalid_payload", f"{field}: not a timestamp: {value[:64]!r}"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.timestamp()
    else:
        raise DecodeError(
            "invalid_payload", f"{field}: expected a timestamp, got {type(value).__name__}"
        )
    shown = repr(value)[:64]
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise DecodeError("invalid_payload", f"{field}: not a timestamp: {shown}")
    if number > _MS_THRESHOLD:
        number /= 1000.0
    if number > _MS_THRESHOLD:
        raise DecodeError("invalid_payload", f"{field}: timestamp out of range: {shown}")
    return number


def bounded_epoch(value: Stamp, field: str) -> float | None:
    """:func:`epoch`, refusing ints wider than 64 bits first with their bit count."""
    guard_int(value, field, "timestamp")
    return epoch(value, field)


def text_id(value: Any, field: str) -> str:
    """A provider message id normalised to a non-empty string (ints are common)."""
    if isinstance(value, bool) or value is None:
        raise DecodeError("invalid_payload", f"{field}: missing message id")
    if isinstance(value, int):
        if not -(10**40) < value < 10**40:
            raise DecodeError("invalid_payload", f"{field}: numeric id out of range")
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DecodeError("invalid_payload", f"{field}: expected a non-empty id, got {value!r}"[:200])


def bounded_id(value: Id, field: str) -> str:
    """:func:`text_id`, refusing ints wider than 64 bits first with their bit count."""
    guard_int(value, field, "id")
    return text_id(value, field)


def optional_id(value: Id, field: str) -> str | None:
    """:func:`text_id` of an id that may be absent: None and blank strings are None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return text_id(value, field)


def optional_text(value: int | str | None) -> str | None:
    """``value`` as stripped text (ints are common); None, empty and blank are None."""
    if value is None:
        return None
    return str(value).strip() or None


def folded(text: str) -> str:
    """``text`` lower-cased, runs of white space folded to one space (``"Not  Sent"``)."""
    return " ".join(text.split()).lower()


def flag_direction(flag: bool | int | str | None, field: str, *, words: bool = False) -> Direction:
    """A "from me" flag as a direction: true/1 outgoing, false/0 incoming, never guessed.

    Reads booleans, 0/1 and ``"0"``/``"1"``; with ``words`` also ``"true"``/``"false"`` in any
    case (providers that document a boolean). Missing or anything else is a DecodeError.
    """
    if flag is None:
        hint = "true outgoing, false incoming" if words else "0 incoming, 1 outgoing"
        raise DecodeError("invalid_payload", f"{field}: missing ({hint})")
    if isinstance(flag, bool):
        return "outgoing" if flag else "incoming"
    text = str(flag).strip().lower()
    if text == "1" or (words and text == "true"):
        return "outgoing"
    if text == "0" or (words and text == "false"):
        return "incoming"
    expected = "a boolean" if words else "0 or 1"
    raise DecodeError("invalid_payload", f"{field}: expected {expected}, got {flag!r}"[:200])


def bool_direction(from_me: bool | None) -> Direction | None:
    """A boolean ``fromMe`` as a direction; None when the payload does not say."""
    if from_me is None:
        return None
    return "outgoing" if from_me else "incoming"


def table_status(
    table: Mapping[str, OutgoingStatus],
    key: str,
    raw: str | None,
    field: str,
    *,
    stamp: Stamp,
    stamp_field: str,
    unknown: str,
    event: str,
) -> StatusReported | Ignored:
    """A status event of message ``key``: ``raw`` looked up stripped and lower-cased in ``table``.

    Missing or blank → DecodeError naming ``field``; not in the table → Ignored as
    ``{unknown} {raw!r}`` (never guessed); else StatusReported with ``raw`` verbatim. ``stamp``
    is read only for a known status, so an ignored one never fails on its time.
    """
    if raw is None or not raw.strip():
        raise DecodeError("invalid_payload", f"{field}: missing")
    status = table.get(raw.strip().lower())
    if status is None:
        return Ignored(reason=f"{unknown} {raw[:40]!r}", event=event)
    return StatusReported(key=key, status=status, raw=raw, provider_time=epoch(stamp, stamp_field))


#: Baileys message fields → message kind, shared by the engines built on Baileys (Evolution,
#: WAHA NOWEB/GOWS): a message carries exactly one of these fields.
BAILEYS_KIND: dict[str, str] = {
    "conversation": "text",
    "extendedTextMessage": "text",
    "imageMessage": "image",
    "videoMessage": "video",
    "ptvMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "documentWithCaptionMessage": "document",
    "stickerMessage": "sticker",
    "locationMessage": "location",
    "liveLocationMessage": "location",
    "contactMessage": "contact",
    "contactsArrayMessage": "contact",
    "reactionMessage": "reaction",
    "pollCreationMessage": "poll",
    "pollCreationMessageV2": "poll",
    "pollCreationMessageV3": "poll",
}


#: Baileys ``connection.update`` ``connection`` → instance status, shared by the engines built
#: on Baileys (Evolution ``data.state``, WAHA NOWEB ``state.change``).
BAILEYS_CONNECTION: dict[str, InstanceStatus] = {
    "open": "connected",
    "connecting": "starting",
    "close": "disconnected",
}

#: Baileys ``DisconnectReason`` codes of a ``close`` that are not a plain disconnect
#: (WhiskeySockets/Baileys ``src/Types/index.ts``): ``loggedOut`` (the phone unlinked us) and
#: ``forbidden`` (WhatsApp refuses the number). Other codes (408 lost/timed out, 428 closed,
#: 440 replaced, 500 bad session, 515 restart required) are reconnected by the engine.
BAILEYS_CLOSE: dict[str, InstanceStatus] = {"401": "logged_out", "403": "banned"}


def baileys_state(connection: str, status_code: object) -> InstanceStatus:
    """A Baileys ``connection`` with its ``lastDisconnect`` status code as an instance status."""
    status = BAILEYS_CONNECTION.get(connection, "unknown")
    if connection == "close":
        return BAILEYS_CLOSE.get(str(status_code).strip(), status)
    return status


#: whatsapp-web.js ``WAState`` (``src/util/Constants.js``) → instance status, shared by the
#: engines built on it (WAHA WEBJS ``state.change``, WhatsGate ``disconnect`` reasons).
#: OPENING/PAIRING/UNLAUNCHED are steps of starting up; CONFLICT (another WhatsApp Web took
#: over), TIMEOUT and PROXYBLOCK drop the link; DEPRECATED_VERSION needs the engine updated
#: and restarted; UNPAIRED(_IDLE) is a logout; (SMB_)TOS_BLOCK a ban.
WEBJS_STATE: dict[str, InstanceStatus] = {
    "CONNECTED": "connected",
    "OPENING": "starting",
    "PAIRING": "starting",
    "UNLAUNCHED": "starting",
    "CONFLICT": "disconnected",
    "TIMEOUT": "disconnected",
    "PROXYBLOCK": "disconnected",
    "DEPRECATED_VERSION": "failed",
    "UNPAIRED": "logged_out",
    "UNPAIRED_IDLE": "logged_out",
    "TOS_BLOCK": "banned",
    "SMB_TOS_BLOCK": "banned",
}
