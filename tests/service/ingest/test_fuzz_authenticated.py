"""Hostile bodies WITH valid credentials, for every provider: they reach the append path and
the decoders, not just the 401/404 door.

Invariant 12: every authenticated webhook is storable (a 200, its bytes kept exactly), and
no body takes the service or the projector down (invariant 6: it is decoded or quarantined,
never a decoder crash). Credentials travel every way a provider sends them: ``?token=``, a
Bearer header, or the provider's own signature (Meta, WAHA, Twilio: no token at all).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from eventstore import read as reader
from eventstore.pool import connect
from projections.providers import PROVIDERS
from projections.runner import Projector
from service.runtime.app import make_app
from tests.support.apps import add_channel
from tests.support.apps import settings as app_settings
from tests.support.samples import FORM, JSON, sample, sample_names

Client = Callable[..., Awaitable[TestClient]]
PUBLIC = "https://acklog.example.com"
SECRET = "fuzz-secret"
SIGNERS = ("meta", "waha", "twilio")


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> TestClient:
    return await aiohttp_client(make_app(app_settings(public_url=PUBLIC), dsn))


@pytest.fixture
async def tokens(dsn: str) -> dict[str, str]:
    """One channel per provider (named after it), with a token and a signing secret."""
    return {p: await add_channel(dsn, p, p, secrets_=[SECRET]) for p in PROVIDERS}


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def projector(dsn: str) -> Projector:
    return Projector(dsn)


def _samples() -> list[tuple[str, bytes, str]]:
    out = []
    for provider in PROVIDERS:
        for name in sample_names(provider):
            try:
                body, ctype = sample(provider, name)
            except (ValueError, KeyError):
                continue
            out.append((provider, body, ctype))
    return out


SAMPLES = _samples()


@st.composite
def hostile_body(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(provider, body, content type): a published sample damaged, re-typed, or pure noise."""
    provider, body, ctype = draw(st.sampled_from(SAMPLES))
    how = draw(st.sampled_from(["flip", "truncate", "splice", "retype", "noise", "as_is"]))
    data = bytearray(body)
    if how == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "splice":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(max_size=64))
    elif how == "retype" and ctype == JSON:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc:
            key = draw(st.sampled_from(sorted(doc)))
            doc[key] = draw(
                st.none()
                | st.booleans()
                | st.integers()
                | st.floats(allow_nan=False)
                | st.text(max_size=30)
                | st.lists(st.integers(), max_size=3)
                | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
            )
            data = bytearray(json.dumps(doc).encode())
    elif how == "noise":
        data = bytearray(draw(st.binary(max_size=512)))
    ctype = draw(st.sampled_from([ctype, ctype, JSON, FORM, "text/plain", ""]))
    return provider, bytes(data), ctype


def credentials(provider: str, token: str, how: str, body: bytes) -> tuple[str, dict[str, str]]:
    """(URL, headers) carrying valid credentials for ``provider``'s channel."""
    path = f"/hooks/{provider}"
    if how == "signature" and provider == "meta":
        sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return path, {"X-Hub-Signature-256": "sha256=" + sig}
    if how == "signature" and provider == "waha":
        sig = hmac.new(SECRET.encode(), body, hashlib.sha512).hexdigest()
        return path, {"X-Webhook-Hmac": sig, "X-Webhook-Hmac-Algorithm": "sha512"}
    if how == "signature" and provider == "twilio":
        params = dict(
            urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        )
        sig = RequestValidator(SECRET).compute_signature(PUBLIC + path, params)
        return path, {"X-Twilio-Signature": sig}
    if how == "bearer":
        return path, {"Authorization": f"Bearer {token}"}
    return f"{path}?token={token}", {}


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(item=hostile_body(), how=st.sampled_from(["query", "bearer", "signature"]))
async def test_authenticated_hostile_bodies_are_stored_and_never_crash_a_decoder(
    client: TestClient,
    tokens: dict[str, str],
    conn: asyncpg.Connection,
    projector: Projector,
    item: tuple[str, bytes, str],
    how: str,
) -> None:
    provider, body, ctype = item
    if how == "signature" and provider not in SIGNERS:
        how = "query"
    if how == "signature" and provider == "twilio" and ctype != FORM:
        ctype = FORM  # Twilio signs form fields: its signature only exists for a form
    url, headers = credentials(provider, tokens[provider], how, body)
    if ctype:
        headers["Content-Type"] = ctype
    resp = await client.post(url, data=body, headers=headers)
    if not body:  # no provider posts an empty body: refused with 400, nothing stored
        assert resp.status == 400, (provider, how, resp.status, await resp.text())
        assert (await resp.json())["error"] == "empty_body"
        return
    assert resp.status == 200, (provider, how, resp.status, await resp.text())
    answer = await resp.json()
    if provider != "whatsgate":  # WhatsGate gets its own answer format
        assert answer["status"] in ("stored", "duplicate"), answer
        stored = await reader.get(conn, answer["position"])
        assert stored is not None and stored.body == body, "stored byte for byte"
    # the projector reads it: decoded or quarantined, never a decoder crash, never stuck
    await projector.catch_up(conn)
    assert projector.position == await reader.head(conn)
    crashes = await conn.fetchval(
        "SELECT count(*) FROM rm.quarantine WHERE reason LIKE 'decoder error%'"
    )
    assert crashes == 0, await conn.fetch("SELECT reason FROM rm.quarantine")
