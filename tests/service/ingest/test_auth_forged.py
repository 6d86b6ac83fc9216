"""A valid token never excuses a forged signature (invariant 10; docs/security.md, "Webhook credentials").

A provider that signs proves the body is its own; a token proves only that the sender knows
the URL. When both come and the signature is wrong, the body is not the provider's: refused,
nothing stored, whichever way the token travels.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from eventstore import read as reader
from service.runtime.app import make_app
from tests.support.apps import add_channel
from tests.support.apps import settings as app_settings
from tests.support.samples import sample

Client = Callable[..., Awaitable[TestClient]]

# a signature header of each signing provider, made with a secret the channel does not have
FORGED = {
    "meta": {
        "X-Hub-Signature-256": "sha256=" + hmac.new(b"guess", b"x", hashlib.sha256).hexdigest()
    },
    "waha": {
        "X-Webhook-Hmac": hmac.new(b"guess", b"x", hashlib.sha512).hexdigest(),
        "X-Webhook-Hmac-Algorithm": "sha512",
    },
    "twilio": {
        "X-Twilio-Signature": base64.b64encode(hmac.new(b"guess", b"x", "sha1").digest()).decode()
    },
}
SAMPLES = {
    "meta": "status_read.json",
    "waha": "message_ack_read.json",
    "twilio": "status_delivered_whatsapp.json",
}


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> TestClient:
    return await aiohttp_client(make_app(app_settings(), dsn))


@pytest.mark.parametrize("provider", sorted(FORGED))
@pytest.mark.parametrize("how", ["query", "bearer", "basic"])
async def test_valid_token_with_forged_signature_is_refused(
    client: TestClient, dsn: str, pool: asyncpg.Pool, provider: str, how: str
) -> None:
    token = await add_channel(dsn, "c", provider, secrets_=["the-real-secret"])
    body, ctype = sample(provider, SAMPLES[provider])
    url, headers = "/hooks/c", {"Content-Type": ctype}
    if how == "query":
        url += f"?token={token}"
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(f"u:{token}".encode()).decode()

    # the token alone is good (so a refusal below is the signature's doing)
    alone = await client.post(url, data=body, headers=headers)
    assert alone.status == 200, await alone.text()

    forged = await client.post(url, data=body, headers={**headers, **FORGED[provider]})
    assert forged.status == 401, await forged.text()
    answer = await forged.json()
    assert answer["error"] == "unauthorized"
    assert "signature" in answer["detail"]
    assert len(await reader.read(pool)) == 1, "the forged request must not be stored"
