"""Event records as written to and read from the log, and the rules that make every one storable.

What is stored is total over all inputs (invariant 12): the body is ``bytea``; header values
that are not UTF-8 text (or hold a NUL, which ``jsonb`` refuses) are kept as base64 under the
header's name plus ``;base64`` (``;`` cannot occur in an HTTP header name, so the key is never
ambiguous); dedup keys are bounded and NUL-free (an odd or long provider id is hashed).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import msgspec

#: suffix of a header key whose value is the base64 of bytes that are not storable text
BASE64_SUFFIX = ";base64"
#: provider event ids up to this many characters are kept readable in the dedup key
MAX_READABLE_ID = 200


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook about to be appended. ``body`` is kept exactly as received."""

    channel: str
    provider: str
    body: bytes
    received_at: dt.datetime
    content_type: str | None = None
    headers: dict[str, str] = {}
    dedup_key: str = ""

    def with_dedup_key(self, event_id: str | None) -> NewEvent:
        """Use the provider's event id when it has one, else the body's SHA-256."""
        return msgspec.structs.replace(self, dedup_key=dedup_key(event_id, self.body))


class Appended(msgspec.Struct, frozen=True):
    position: int
    duplicate_of: int | None


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    received_at: dt.datetime
    channel: str
    provider: str
    content_type: str | None
    headers: dict[str, str]
    body: bytes
    dedup_key: str
    duplicate_of: int | None


def body_key(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def dedup_key(event_id: str | None, body: bytes) -> str:
    """``id:<id>`` for a short printable provider id, ``idsha256:<hex>`` for any other id
    (a NUL, a lone surrogate or 3 kB would make the row unwritable), else the body's hash."""
    if not event_id:
        return body_key(body)
    if len(event_id) <= MAX_READABLE_ID and event_id.isprintable():
        return "id:" + event_id
    raw = event_id.encode("utf-8", "surrogatepass")
    return "idsha256:" + hashlib.sha256(raw).hexdigest()


def text_or_none(value: bytes) -> str | None:
    """``value`` as storable text (UTF-8 without NUL), or None when it is not."""
    if b"\x00" in value:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def header_entry(name: str, value: bytes) -> tuple[str, str]:
    """The (key, value) under which one header is stored, losslessly whatever its bytes."""
    text = text_or_none(value)
    if text is not None:
        return name, text
    return name + BASE64_SUFFIX, base64.b64encode(value).decode()


def header_bytes(headers: dict[str, str], name: str) -> bytes | None:
    """The received bytes of header ``name`` (lower case) from a stored header map."""
    if name in headers:
        return headers[name].encode()
    encoded = headers.get(name + BASE64_SUFFIX)
    return base64.b64decode(encoded) if encoded is not None else None
