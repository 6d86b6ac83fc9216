"""Fresh, WhatsApp-like ids for simulated webhooks, all drawn from one seeded generator.

Ids must be new on every run: the log deduplicates by the provider's event id or by the body's
hash, so a reused id would turn a new simulation into "duplicates" of an old one. A seed makes
a run repeatable on purpose (same ids, same bodies).
"""

from __future__ import annotations

import base64
import itertools
import random
import string

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_ALNUM = string.ascii_letters + string.digits


class Ids:
    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)  # None: seeded from the OS, a fresh run every time
        self._serial = itertools.count(self.rng.randrange(10_000, 10_000_000))

    def hex(self, n: int, *, upper: bool = True) -> str:
        text = "".join(self.rng.choice("0123456789abcdef") for _ in range(n))
        return text.upper() if upper else text

    def digits(self, n: int) -> str:
        return str(self.rng.randrange(10 ** (n - 1), 10**n))

    def alnum(self, n: int, alphabet: str = _ALNUM) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def serial(self) -> int:
        """Increasing integers (WhatsGate event ids, Chat API message numbers, WAMM ids)."""
        return next(self._serial)

    def phone(self) -> str:
        """A number in the fictional +1 555 range, digits only."""
        return "1555" + self.digits(7)

    def web_id(self) -> str:
        """The hex id WhatsApp Web / multi-device clients give the messages they send."""
        return "3EB0" + self.hex(18)

    def phone_id(self) -> str:
        """The 32-hex id a phone gives its messages (what incoming messages carry)."""
        return self.hex(32)

    def serialized(self, from_me: bool, chat: str, msg_id: str) -> str:
        """whatsapp-web.js ``id._serialized``: ``{fromMe}_{chat}_{id}``."""
        return f"{'true' if from_me else 'false'}_{chat}_{msg_id}"

    def wamid(self, phone: str) -> str:
        """A Cloud API message id: ``wamid.`` + base64 of a small protobuf naming the chat."""
        raw = b"\x1c\x18" + bytes([len(phone)]) + phone.encode() + b"\x15\x02\x00\x11\x18\x12"
        return "wamid." + base64.b64encode(raw + self.hex(18).encode() + b"\x00").decode()

    def twilio_sid(self, prefix: str = "SM") -> str:
        return prefix + self.hex(32, upper=False)

    def ulid(self) -> str:
        """26 Crockford base32 characters, lower case (WAHA's ``evt_…`` event ids)."""
        return self.alnum(26, _CROCKFORD)
