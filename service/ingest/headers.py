"""Which request headers are stored with an event, and how: losslessly, never credentials.

A header is credential-like when a word of its name (split on ``-``, ``_``, ``.``) contains
a credential stem (``auth``, ``token``, ``secret``, ``key``, ``session``, ``cookie``,
``passw``…) or is one of a few short credential words (``sid``, ``pass``, ``otp``). That is a
rule over the name, not a list: ``X-Api_Key``, ``X-Auth``, ``Private-Key``, ``X-Session-Id``,
``Proxy-Authorization`` and ``X-Access-Token`` are all dropped (invariant 10).

Values are kept whole and losslessly (``eventstore.events.header_entry``); a repeated header
is joined with ``", "`` as RFC 9110 combines field lines. aiohttp already bounds how many
headers a request has and how long each is (``service.http.server``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from eventstore.events import BASE64_SUFFIX, header_bytes, header_entry, text_or_none

_STEMS = (
    "auth",
    "token",
    "secret",
    "passw",
    "passwd",
    "pwd",
    "key",
    "session",
    "cookie",
    "credential",
    "bearer",
    "jwt",
    "csrf",
    "xsrf",
    "signin",
)
_WORDS = frozenset({"sid", "pass", "otp", "pin"})
_SPLIT = re.compile(r"[-_.\s]+")

#: raw header name → its stored (lower-case) name, or None when it is never stored
_names: dict[bytes, str | None] = {}


def is_credential(name: str) -> bool:
    """True when a header of this name may carry a credential (see the module's rule)."""
    for word in _SPLIT.split(name.lower()):
        if word in _WORDS or any(stem in word for stem in _STEMS):
            return True
    return False


def _stored_name(raw: bytes) -> str | None:
    name = _names.get(raw, "")
    if name != "":
        return name
    text = raw.decode("latin-1").lower()
    stored = None if is_credential(text) else text
    if len(_names) >= 4096:  # bounded: a client inventing names cannot grow it
        _names.clear()
    _names[raw] = stored
    return stored


def kept_headers(
    raw_headers: Sequence[tuple[bytes, bytes]],
) -> tuple[dict[str, str], str | None]:
    """(headers to store, the Content-Type as text or None when its bytes are not text).

    The common request (each name once, every value NUL-free UTF-8) is stored here in one
    pass; anything else (a repeated field line, a value that is not text, a name no HTTP
    parser passes) goes to ``_kept_headers``, the rule itself. Both give the same answer for
    any input (a property test)."""
    out: dict[str, str] = {}
    names = _names
    for raw_name, value in raw_headers:
        name = names.get(raw_name, "")
        if name == "":
            name = _stored_name(raw_name)
        if name is None:
            continue
        if name in out or b"\x00" in value or ";" in name:
            return _kept_headers(raw_headers)
        try:
            out[name] = value.decode()
        except UnicodeDecodeError:
            return _kept_headers(raw_headers)
    return out, out.get("content-type")


def _kept_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], str | None]:
    """The rule for every request: losslessly, repeated lines combined, credentials dropped."""
    out: dict[str, str] = {}
    content_type: str | None = None
    for raw_name, value in raw_headers:
        name = _stored_name(raw_name)
        if name is None:
            continue
        if name in out or name + BASE64_SUFFIX in out:  # a repeated field line: combine
            value = (header_bytes(out, name) or b"") + b", " + value
            out.pop(name, None)
            out.pop(name + BASE64_SUFFIX, None)
        key, stored = header_entry(name, value)
        out[key] = stored
        if name == "content-type":
            content_type = text_or_none(value)
    return out, content_type
