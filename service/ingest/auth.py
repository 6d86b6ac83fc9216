"""Webhook authentication: tokens, Basic auth, provider signatures.

Every comparison of a secret goes through ``hmac.compare_digest`` (invariant 10); signatures
are computed over the raw bytes exactly as received.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import hmac
import urllib.parse

import msgspec
from multidict import MultiMapping

from eventstore.channels import Channel, token_hash


def token_matches(channel: Channel, token: str) -> bool:
    digest = token_hash(token)
    ok = False
    for known in channel.token_hashes:  # no early exit: same time whichever token matches
        ok |= hmac.compare_digest(digest, known)
    return ok


def meta_signature(secret: str, body: bytes) -> str:
    """Meta: ``sha256=`` and the hex HMAC-SHA256 of the raw body under the app secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def waha_signature(secret: str, body: bytes, algorithm: str = "sha512") -> str:
    """WAHA: the hex HMAC of the raw body, SHA-512 unless ``X-Webhook-Hmac-Algorithm`` says."""
    return hmac.new(secret.encode(), body, algorithm).hexdigest()


def twilio_signature(secret: str, url: str, body: bytes) -> str:
    """Twilio: base64 HMAC-SHA1 over the full URL plus each form key and value, keys sorted."""
    params = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    data = url + "".join(k + v for k, v in sorted(params))
    mac = hmac.new(secret.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


class Signed(msgspec.Struct, frozen=True):
    """What a signature covers, as received."""

    headers: MultiMapping[str]
    body: bytes
    url: str


class Scheme(abc.ABC):
    """One provider's signature: its header, and ``sign``; ``verify`` calls ``sign`` and
    compares in constant time (the habit of standardwebhooks: one definition of the MAC)."""

    header: str

    @abc.abstractmethod
    def sign(self, secret: str, request: Signed) -> str | None:
        """The expected header value, or None when the request cannot be signed this way."""

    def normalize(self, given: str) -> str:
        return given.strip()

    def verify(self, secret: str, given: str, request: Signed) -> bool:
        expected = self.sign(secret, request)
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode(), self.normalize(given).encode())


class MetaScheme(Scheme):
    header = "X-Hub-Signature-256"

    def sign(self, secret: str, request: Signed) -> str | None:
        return meta_signature(secret, request.body)

    def normalize(self, given: str) -> str:
        return given.strip().lower()  # hex digits in either case


class WahaScheme(Scheme):
    header = "X-Webhook-Hmac"
    algorithms = ("sha512", "sha256")

    def sign(self, secret: str, request: Signed) -> str | None:
        algorithm = request.headers.get("X-Webhook-Hmac-Algorithm", "sha512").strip().lower()
        if algorithm not in self.algorithms:
            return None  # an algorithm we do not accept never verifies
        return waha_signature(secret, request.body, algorithm)

    def normalize(self, given: str) -> str:
        return given.strip().lower()


class TwilioScheme(Scheme):
    header = "X-Twilio-Signature"

    def sign(self, secret: str, request: Signed) -> str | None:
        return twilio_signature(secret, request.url, request.body)


#: The signature scheme of each provider that signs its webhooks. The channel's provider
#: chooses it: a header of another provider's scheme is not a signature for this channel.
SCHEMES: dict[str, Scheme] = {
    "meta": MetaScheme(),
    "waha": WahaScheme(),
    "twilio": TwilioScheme(),
}


def signature_verdict(
    channel: Channel, headers: MultiMapping[str], body: bytes, url: str
) -> bool | None:
    """None when the channel's provider signs nothing or the request carries no signature;
    else whether it is signed by one of the channel's secrets.

    Every copy of the signature header must verify: a valid one never outweighs a forged
    second one.
    """
    scheme = SCHEMES.get(channel.provider)
    if scheme is None:
        return None
    given = headers.getall(scheme.header, [])
    if not given:
        return None
    request = Signed(headers, body, url)
    verdict = True
    for value in given:
        ok = False
        for secret in channel.secrets:  # no early exit: same time whichever secret signs
            ok |= scheme.verify(secret, value, request)
        verdict &= ok
    return verdict


def authenticate(
    channel: Channel,
    *,
    query_token: str | None,
    authorization: str | None,
    headers: MultiMapping[str],
    body: bytes,
    url: str,
) -> str | None:
    """Return None when the request is authentic, else a reason for the 401.

    A signature header of the channel's provider that does not verify is a forgery and fails
    the request even when a valid token comes with it.
    """
    verdict = signature_verdict(channel, headers, body, url)
    if verdict is False:
        return "signature does not match any of the channel's secrets"
    if query_token and token_matches(channel, query_token):
        return None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and token_matches(channel, value.strip()):
            return None
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "malformed Basic credentials"
            user_ok = channel.basic_user is None or hmac.compare_digest(
                user.encode(), channel.basic_user.encode()
            )
            if user_ok and token_matches(channel, password):
                return None
    if verdict is True:
        return None
    if query_token or authorization:
        return "invalid credentials"
    return "missing credentials: pass ?token=…, a Bearer token, Basic auth or a signature"
