"""Signatures from outside the project: known-answer vectors and the providers' own library.

Every expected value here comes from a third party, never from the providers' modules
(``PROVIDER.signature``) nor from ``service.ingest.auth``:

- Meta (``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``) and WAHA
  (``X-Webhook-Hmac: <hex HMAC-SHA512(key, raw body)>``, ``X-Webhook-Hmac-Algorithm: sha512``)
  are checked with the published HMAC test vectors of RFC 4231 (test case 2: key ``Jefe``) and,
  for Meta, the example of the WhatsApp SDK's documentation
  (``compute_signature("test", "secret")``).
- Twilio (``X-Twilio-Signature``: base64 HMAC-SHA1 over the URL plus each sorted form key and
  value) is signed by Twilio's own ``twilio.request_validator.RequestValidator``; its
  documentation's example (auth token ``12345``) pins the validator itself.

All go through HTTP (``POST /hooks/<channel>`` with no token), so they hold whichever module
implements the schemes.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from eventstore import read as reader
from projections import providers
from service.runtime.app import make_app
from tests.support.apps import add_channel
from tests.support.apps import settings as app_settings
from tests.support.samples import FORM, sample

Client = Callable[..., Awaitable[TestClient]]
PUBLIC = "https://acklog.example.com"

RFC4231_KEY = "Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
RFC4231_SHA512 = "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
# hexdocs.pm/whatsapp_sdk, WhatsApp.Webhook.compute_signature("test", "secret")
META_SDK_EXAMPLE = (
    "secret",
    b"test",
    "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914",
)


#: the providers whose signatures are pinned below by a third party's vectors
VECTORS = {"meta", "waha", "twilio"}


def test_every_signing_provider_has_third_party_vectors() -> None:
    """A provider module that brings a signature is picked up here: pin it with vectors."""
    signing = {p for p in providers.PROVIDERS if providers.get(p).signature is not None}
    assert signing == VECTORS


def flip(hexdigest: str) -> str:
    """The same signature with its last digit changed: a forgery one bit away."""
    return hexdigest[:-1] + ("0" if hexdigest[-1] != "0" else "1")


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> TestClient:
    return await aiohttp_client(make_app(app_settings(public_url=PUBLIC), dsn))


@pytest.mark.parametrize(
    ("secret", "body", "hexdigest"),
    [(RFC4231_KEY, RFC4231_DATA, RFC4231_SHA256), META_SDK_EXAMPLE],
    ids=["rfc4231", "whatsapp-sdk-doc"],
)
async def test_meta_known_answers(
    client: TestClient, dsn: str, pool: asyncpg.Pool, secret: str, body: bytes, hexdigest: str
) -> None:
    await add_channel(dsn, "m", "meta", secrets_=[secret])
    good = await client.post(
        "/hooks/m", data=body, headers={"X-Hub-Signature-256": "sha256=" + hexdigest}
    )
    assert good.status == 200, await good.text()
    bad = await client.post(
        "/hooks/m", data=body, headers={"X-Hub-Signature-256": "sha256=" + flip(hexdigest)}
    )
    assert bad.status == 401
    assert [e.body for e in await reader.read(pool)] == [body]


async def test_waha_known_answer(client: TestClient, dsn: str, pool: asyncpg.Pool) -> None:
    await add_channel(dsn, "w", "waha", secrets_=[RFC4231_KEY])
    headers = {"X-Webhook-Hmac": RFC4231_SHA512, "X-Webhook-Hmac-Algorithm": "sha512"}
    good = await client.post("/hooks/w", data=RFC4231_DATA, headers=headers)
    assert good.status == 200, await good.text()
    headers["X-Webhook-Hmac"] = flip(RFC4231_SHA512)
    assert (await client.post("/hooks/w", data=RFC4231_DATA, headers=headers)).status == 401
    assert len(await reader.read(pool)) == 1


def test_twilio_validator_matches_twilios_documented_example() -> None:
    """The oracle itself: Twilio's docs sign this request with auth token 12345 as below."""
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert (
        RequestValidator("12345").compute_signature(url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )


async def post_twilio(
    client: TestClient, auth_token: str, params: dict[str, str], path: str = "/hooks/t"
) -> int:
    body = urllib.parse.urlencode(params).encode()
    signature = RequestValidator(auth_token).compute_signature(PUBLIC + path, params)
    resp = await client.post(
        path, data=body, headers={"Content-Type": FORM, "X-Twilio-Signature": signature}
    )
    return resp.status


@pytest.mark.parametrize(
    "name",
    [
        "status_delivered_whatsapp.json",
        "status_failed_63018_rate_limit.json",
        "incoming_image_whatsapp.json",
    ],
)
async def test_twilio_samples_signed_by_twilios_validator(
    client: TestClient, dsn: str, name: str
) -> None:
    await add_channel(dsn, "t", "twilio", secrets_=["twilio-auth-token"])
    body, _ = sample("twilio", name)
    params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    assert await post_twilio(client, "twilio-auth-token", params) == 200
    assert await post_twilio(client, "another-token", params) == 401


_keys = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12)
_values = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=20)


@pytest.fixture
async def twilio_channel(dsn: str) -> str:
    await add_channel(dsn, "tw", "twilio", secrets_=["tok"])
    return "/hooks/tw"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=st.dictionaries(_keys, _values, min_size=1, max_size=8))
async def test_twilio_any_form_signed_by_twilios_validator(
    client: TestClient, twilio_channel: str, params: dict[str, str]
) -> None:
    """Any form (keys in any order, unicode, blanks), signed by Twilio's library: accepted."""
    assert await post_twilio(client, "tok", params, twilio_channel) == 200, params
