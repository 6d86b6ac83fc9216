"""POST /hooks/{channel} through the real app, real sockets and real PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from eventstore import channels as registry
from eventstore import read as reader
from eventstore.pool import connect
from projections.providers.meta import signature as meta_signature
from projections.providers.twilio import signature as twilio_signature
from projections.providers.waha import signature as waha_signature
from service.ingest.channels import CHANNELS
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.samples import sample

Client = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> TestClient:
    return await aiohttp_client(make_app(settings(max_body=64 * 1024), dsn))


async def test_stored_byte_for_byte_and_answered_after_commit(
    client: TestClient, dsn: str, pool: asyncpg.Pool
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    body, ctype = sample("wamm", "msg_state_delivered.json")
    resp = await client.post(
        f"/hooks/shop?token={token}", data=body, headers={"Content-Type": ctype, "Cookie": "a=b"}
    )
    assert resp.status == 200
    answer = await resp.json()
    assert answer["status"] == "stored"
    stored = await reader.get(pool, answer["position"])
    assert stored is not None
    assert stored.body == body
    assert stored.channel == "shop" and stored.provider == "wamm"
    assert stored.content_type == ctype
    assert "cookie" not in stored.headers and "authorization" not in stored.headers
    assert token not in json.dumps(stored.headers)


@pytest.mark.parametrize("how", ["query", "bearer", "basic"])
async def test_token_in_query_bearer_or_basic(client: TestClient, dsn: str, how: str) -> None:
    token = await add_channel(dsn, "q", "qikchat", basic_user="qik")
    body, _ = sample("qikchat", "status_read.json")
    url, headers = "/hooks/q", {}
    if how == "query":
        url += f"?token={token}"
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(f"qik:{token}".encode()).decode()
    resp = await client.post(url, data=body, headers=headers)
    assert resp.status == 200, await resp.text()


async def test_basic_auth_with_wrong_user_is_refused(client: TestClient, dsn: str) -> None:
    token = await add_channel(dsn, "q", "qikchat", basic_user="qik")
    auth = "Basic " + base64.b64encode(f"mallory:{token}".encode()).decode()
    resp = await client.post("/hooks/q", data=b"{}", headers={"Authorization": auth})
    assert resp.status == 401


async def test_whatsgate_gets_its_event_id_echoed(client: TestClient, dsn: str) -> None:
    token = await add_channel(dsn, "wg", "whatsgate")
    body, _ = sample("whatsgate", "ack.json")
    resp = await client.post(f"/hooks/wg?token={token}", data=body)
    assert resp.status == 200
    assert await resp.json() == {"result": "OK", "id": 19}


async def test_duplicates_are_stored_and_marked(
    client: TestClient, dsn: str, pool: asyncpg.Pool
) -> None:
    token = await add_channel(dsn, "wg", "whatsgate")
    body, _ = sample("whatsgate", "ack.json")
    for _ in range(3):
        assert (await client.post(f"/hooks/wg?token={token}", data=body)).status == 200
    events = await reader.read(pool)
    assert [e.duplicate_of for e in events] == [None, events[0].position, events[0].position]
    assert events[0].dedup_key == "id:19"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/hooks/nope?token=x", 404, "unknown_channel"),
        ("/hooks/..%2F..%2Fetc?token=x", 404, "unknown_channel"),
        ("/hooks/a';DROP TABLE events;--?token=x", 404, "unknown_channel"),
        ("/hooks/shop", 401, "unauthorized"),
        ("/hooks/shop?token=wrong", 401, "unauthorized"),
    ],
)
async def test_refusals_store_nothing(
    client: TestClient, dsn: str, pool: asyncpg.Pool, path: str, status: int, code: str
) -> None:
    await add_channel(dsn, "shop", "wamm")
    resp = await client.post(path, data=b'{"x": 1}')
    assert resp.status == status
    assert (await resp.json())["error"] == code
    assert await reader.head(pool) == 0


async def test_body_over_the_limit_is_413(client: TestClient, dsn: str, pool: asyncpg.Pool) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    resp = await client.post(f"/hooks/shop?token={token}", data=b"x" * (64 * 1024 + 1))
    assert resp.status == 413
    assert (await resp.json())["error"] == "too_large"

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"y" * 8192

    resp = await client.post(f"/hooks/shop?token={token}", data=chunks())
    assert resp.status == 413
    assert await reader.head(pool) == 0


async def test_broken_json_and_forms_are_stored_too(
    client: TestClient, dsn: str, pool: asyncpg.Pool
) -> None:
    token = await add_channel(dsn, "q", "qikchat")
    body, _ = sample("qikchat", "status_read.published.txt")
    resp = await client.post(f"/hooks/q?token={token}", data=body)
    assert resp.status == 200
    assert (await reader.read(pool))[0].body == body


async def test_allow_list(client: TestClient, dsn: str, pool: asyncpg.Pool) -> None:
    token = await add_channel(dsn, "in", "wamm", allow_cidrs=["10.0.0.0/8"])
    resp = await client.post(f"/hooks/in?token={token}", data=b"{}")
    assert resp.status == 403
    token = await add_channel(dsn, "lo", "wamm", allow_cidrs=["127.0.0.0/8", "::1/128"])
    assert (await client.post(f"/hooks/lo?token={token}", data=b"{}")).status == 200
    assert await reader.head(pool) > 0


async def test_meta_signature(client: TestClient, dsn: str, pool: asyncpg.Pool) -> None:
    await add_channel(dsn, "m", "meta", secrets_=["old-secret", "app-secret"])
    body, _ = sample("meta", "status_sent.json")
    good = meta_signature("app-secret", body)
    resp = await client.post("/hooks/m", data=body, headers={"X-Hub-Signature-256": good})
    assert resp.status == 200
    forged = meta_signature("app-secret", body + b" ")
    resp = await client.post("/hooks/m", data=body, headers={"X-Hub-Signature-256": forged})
    assert resp.status == 401
    assert (await resp.json())["detail"].startswith("signature does not match")
    assert len(await reader.read(pool)) == 1


async def test_waha_signature(client: TestClient, dsn: str) -> None:
    await add_channel(dsn, "w", "waha", secrets_=["k"])
    body, _ = sample("waha", "message_ack_read.json")
    headers = {"X-Webhook-Hmac": waha_signature("k", body), "X-Webhook-Hmac-Algorithm": "sha512"}
    assert (await client.post("/hooks/w", data=body, headers=headers)).status == 200
    headers["X-Webhook-Hmac"] = waha_signature("other", body)
    assert (await client.post("/hooks/w", data=body, headers=headers)).status == 401


async def test_twilio_signature(client: TestClient, dsn: str) -> None:
    await add_channel(dsn, "t", "twilio", secrets_=["auth-token"])
    body, ctype = sample("twilio", "status_delivered_whatsapp.json")
    url = str(client.make_url("/hooks/t"))
    headers = {
        "Content-Type": ctype,
        "X-Twilio-Signature": twilio_signature("auth-token", url, body),
    }
    assert (await client.post("/hooks/t", data=body, headers=headers)).status == 200
    headers["X-Twilio-Signature"] = twilio_signature("auth-token", url + "x", body)
    assert (await client.post("/hooks/t", data=body, headers=headers)).status == 401


async def test_meta_verification_handshake(client: TestClient, dsn: str) -> None:
    token = await add_channel(dsn, "m", "meta")
    ok = await client.get(
        "/hooks/m",
        params={"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"},
    )
    assert ok.status == 200 and await ok.text() == "42"
    bad = await client.get(
        "/hooks/m", params={"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "42"}
    )
    assert bad.status == 401
    missing = await client.get("/hooks/m")
    assert missing.status == 400 and (await missing.json())["error"] == "bad_request"


async def test_token_rotation(client: TestClient, dsn: str) -> None:
    old = await add_channel(dsn, "r", "wamm")
    assert (await client.post(f"/hooks/r?token={old}", data=b"{}")).status == 200  # cached now
    conn = await connect(dsn)
    try:
        new = await registry.add_token(conn, "r")
        ids = (await registry.describe(conn))[0]["tokens"]
        assert len(ids) == 2
        await registry.revoke_token(conn, "r", ids[0])
    finally:
        await conn.close()
    # the new token works at once although the channel is cached; the revoked one lives on
    # for at most the cache's 2 s, so drop the cache to see it refused
    assert (await client.post(f"/hooks/r?token={new}", data=b"{}")).status == 200
    client.app[CHANNELS].invalidate()
    assert (await client.post(f"/hooks/r?token={old}", data=b"{}")).status == 401


async def test_wrong_method_is_json_405(client: TestClient) -> None:
    resp = await client.put("/hooks/x", data=b"{}")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"


async def test_health(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["database"] == "ok"


async def test_failed_auth_is_rate_limited_but_valid_credentials_never_are(
    aiohttp_client: Client, dsn: str
) -> None:
    client = await aiohttp_client(make_app(settings(auth_failures_per_minute=5), dsn))
    token = await add_channel(dsn, "shop", "wamm")
    codes = [(await client.post("/hooks/shop?token=bad", data=b"{}")).status for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
    limited = await client.post("/hooks/shop?token=bad", data=b"{}")
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await client.post(f"/hooks/shop?token={token}", data=b"{}")).status == 200
