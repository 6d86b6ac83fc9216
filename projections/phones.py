"""One person's phone number in every spelling, and the mask that makes it unreadable.

What a user types (``+55 11 98888-7777``, ``5511988887777``, ``whatsapp:+55…``,
``5511988887777@c.us``) is parsed with `phonenumbers` (Google's libphonenumber metadata) into
the number's international digits. Providers spell it as those digits inside something else
(``+E164``, ``whatsapp:+…``, ``…@c.us``, ``…@s.whatsapp.net``, Meta ``wa_id`` and
``recipient_id``, Z-API ``phone``, Green-API ``chatId``, WAHA message ids
``true_…@c.us_…``, old group ids ``creator-time@g.us``; Meta's message ids ``wamid.…`` hold
them in base64, decoded and re-encoded here), so a match is those digits bounded by
no other digit. WhatsApp drops or adds a digit in some countries (Brazil's ninth mobile digit:
``5511988887777`` is also ``551188887777@c.us``; Mexico's ``521``; Argentina's ``549``), so
each number has its variants. A person may also have written it in a message's text,
formatted: that form (digits separated by spaces, dots, dashes or parentheses, an optional
``+``) matches too when nothing but a separator-free edge surrounds it.

:func:`Spellings.mask` replaces each digit of every match by ``0``: the bytes keep their
length and JSON stays JSON (the number is inside a string in every provider's payloads; a bare JSON number becomes ``1000…`` instead), so an erased event still decodes
and the fold still runs.
"""

from __future__ import annotations

import base64
import re

import phonenumbers

__all__ = ["InvalidPhone", "Spellings", "parse"]

#: what may surround a typed number: a provider's prefixes and suffixes
_PREFIX = re.compile(r"^\s*(?:whatsapp:|tel:)?", re.IGNORECASE)
_SUFFIX = re.compile(r"(?:@c\.us|@s\.whatsapp\.net)\s*$", re.IGNORECASE)
_TYPED = re.compile(r"^\+?[0-9][0-9 .()\-/]*$")
_SEPARATORS = rb"[ .()\-]{0,2}"
#: a Meta message id: ``wamid.`` and base64 of a record that holds the recipient's number
_WAMID = re.compile(rb"(wamid\.)([A-Za-z0-9+/_-]{8,}={0,2})")


class InvalidPhone(ValueError):
    """What was typed is not a phone number with its country code."""


class Spellings:
    """The international digits of one number (``e164`` first, then WhatsApp's variants)."""

    def __init__(self, e164: str, variants: tuple[str, ...] = ()) -> None:
        self.e164 = e164
        self.variants = variants
        longest = sorted(self.digits, key=len, reverse=True)
        plain = b"|".join(re.escape(v.encode()) for v in longest)
        formatted = b"|".join(
            _SEPARATORS.join(re.escape(bytes([c])) for c in v.encode()) for v in longest
        )
        self._plain = re.compile(rb"(?<![0-9])(?:" + plain + rb")(?![0-9])")
        self._formatted = re.compile(
            rb"(?<![0-9])(?<![0-9][ .\-])\+?(?:" + formatted + rb")(?![ .()\-]?[0-9])"
        )

    def __repr__(self) -> str:
        return f"Spellings({len(self.digits)} variants)"  # never the number itself

    @property
    def digits(self) -> tuple[str, ...]:
        return (self.e164, *self.variants)

    def mask(self, data: bytes) -> bytes:
        """``data`` with every digit of every spelling of the number replaced by ``0``,
        inside Meta's message ids too."""
        data = self._formatted.sub(_zeros, self._plain.sub(_zeros, data))
        return _WAMID.sub(self._wamid, data) if b"wamid." in data else data

    def _wamid(self, m: re.Match[bytes]) -> bytes:
        """A ``wamid.`` whose decoded record names the number, re-encoded with it masked (same
        length and alphabet): Meta's ids embed the recipient's digits in base64."""
        token = m.group(2)
        urlsafe = b"-" in token or b"_" in token
        bare = token.rstrip(b"=")
        try:
            record = base64.b64decode(
                bare + b"=" * (-len(bare) % 4), altchars=b"-_" if urlsafe else None
            )
        except ValueError:
            return m.group(0)
        masked = self._plain.sub(_zeros, record)
        if masked == record:
            return m.group(0)
        encoded = base64.b64encode(masked, altchars=b"-_" if urlsafe else None)
        return m.group(1) + encoded.rstrip(b"=") + token[len(bare) :]

    def mask_text(self, text: str) -> str:
        return self.mask(text.encode()).decode()

    def matches(self, data: bytes) -> bool:
        return self.mask(data) != data


def _zeros(m: re.Match[bytes]) -> bytes:
    masked = bytes(0x30 if 0x30 <= c <= 0x39 else c for c in m.group(0))
    before = m.string[: m.start()].rstrip()[-1:]
    if before in (b":", b"[", b",") and masked[:1] == b"0":
        return b"1" + masked[1:]  # a bare JSON number cannot start with 0: 1000… stays JSON
    return masked


def parse(typed: str) -> Spellings:
    """The number a user typed, in any common spelling; :class:`InvalidPhone` if it is none."""
    text = _SUFFIX.sub("", _PREFIX.sub("", typed)).strip()
    if not _TYPED.match(text) or len(text) > 40:
        raise InvalidPhone(
            "not a phone number: type it with its country code, e.g. +55 11 98888-7777"
        )
    if text.startswith("00"):
        text = text[2:]  # the international call prefix of most countries
    if not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number with a country code: {exc}") from None
    cc = number.country_code or 0
    national = phonenumbers.national_significant_number(number)
    if cc == 52 and len(national) == 11 and national.startswith("1"):
        national = national[1:]  # Mexico's old mobile prefix: the same number without it
        number = phonenumbers.parse(f"+52{national}", None)
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone("not a possible phone number for its country (check the digits)")
    e164 = f"{cc}{national}"
    return Spellings(e164, tuple(f"{cc}{n}" for n in _variants(cc, national)))


def _variants(cc: int, national: str) -> list[str]:
    """The other national forms WhatsApp uses for the same line."""
    if cc == 55 and len(national) == 11 and national[2] == "9":
        return [national[:2] + national[3:]]  # a Brazilian mobile without its ninth digit
    if cc == 55 and len(national) == 10 and national[2] in "6789":
        return [national[:2] + "9" + national[2:]]  # …and one typed without it
    if cc == 52 and len(national) == 10:
        return ["1" + national]  # Mexico: 521 + ten digits
    if cc == 54 and len(national) == 11 and national.startswith("9"):
        return [national[1:]]  # Argentina: 549 + ten digits is 54 + ten digits
    if cc == 54 and len(national) == 10:
        return ["9" + national]
    return []
