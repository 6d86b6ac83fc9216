"""Webhook authentication: tokens, Basic auth, provider signatures.

Every comparison of a secret goes through ``hmac.compare_digest`` (invariant 10); signatures
are computed over the raw bytes exactly as received. How a provider signs is its module's
(``PROVIDER.signature``, pure, in ``projections.providers``): this module only asks.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from multidict import MultiMapping

from eventstore.channels import Channel, token_hash
from projections import providers
from projections.providers.base import Signature, Signed


def token_matches(channel: Channel, token: str) -> bool:
    digest = token_hash(token)
    ok = False
    for known in channel.token_hashes:  # no early exit: same time whichever token matches
        ok |= hmac.compare_digest(digest, known)
    return ok


def _signature(channel: Channel) -> Signature | None:
    found = providers.find(channel.provider)
    return found.signature if found is not None else None


def covers_url(channel: Channel, headers: MultiMapping[str]) -> bool:
    """Whether the request carries a signature of the channel's provider that signs the URL
    (only then is the URL worth building: it costs ~4 µs per webhook)."""
    scheme = _signature(channel)
    return scheme is not None and scheme.covers_url and scheme.header in headers


def signature_verdict(
    channel: Channel, headers: MultiMapping[str], body: bytes, url: str
) -> bool | None:
    """None when the channel's provider signs nothing or the request carries no signature;
    else whether it is signed by one of the channel's secrets.

    Every copy of the signature header must verify: a valid one never outweighs a forged
    second one.
    """
    scheme = _signature(channel)
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
