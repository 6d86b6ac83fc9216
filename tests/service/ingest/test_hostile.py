"""Hostile input: documented 4xx with JSON, never a 5xx, nothing stored unauthenticated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.pool import connect
from eventstore.read import head
from projections.providers import PROVIDERS
from projections.providers.meta import signature as meta_signature
from projections.runner import Projector
from service.http import server
from service.runtime.app import make_app
from tests.support.apps import add_channel
from tests.support.apps import settings as app_settings
from tests.support.samples import sample

Client = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> TestClient:
    return await aiohttp_client(make_app(app_settings(auth_failures_per_minute=20), dsn))


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


async def test_garbage_is_stored_and_quarantined_never_crashing_a_decoder(
    client: TestClient, dsn: str, conn: asyncpg.Connection
) -> None:
    bodies = [
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,  # JSON nested 100,000 deep
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        json.dumps({"event": "x" * 100_000}).encode(),
        b"\x00" * 1000,
    ]
    for provider in PROVIDERS:
        token = await add_channel(dsn, f"h-{provider}", provider)
        for body in bodies:
            resp = await client.post(f"/hooks/h-{provider}?token={token}", data=body)
            assert resp.status == 200, (provider, await resp.text())
        # no provider posts an empty body: refused with a reason, nothing stored (issue 26)
        resp = await client.post(f"/hooks/h-{provider}?token={token}", data=b"")
        assert resp.status == 400, (provider, await resp.text())
        assert (await resp.json())["error"] == "empty_body"
    assert await Projector(dsn).catch_up(conn) == len(PROVIDERS) * len(bodies)
    quarantined = await conn.fetchval("SELECT count(*) FROM rm.quarantine")
    reasons = {r["reason"][:40] for r in await conn.fetch("SELECT reason FROM rm.quarantine")}
    assert quarantined >= len(PROVIDERS) * 4, reasons
    assert not any(r.startswith("decoder error") for r in reasons), reasons


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=2000),
    ctype=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "\x7f"]
    ),
    path=st.text(min_size=1, max_size=40),
)
async def test_random_requests_never_5xx(
    client: TestClient, dsn: str, body: bytes, ctype: str, path: str
) -> None:
    headers = {"Content-Type": ctype} if ctype.isprintable() else {}
    try:
        resp = await client.post("/hooks/" + path, data=body, headers=headers)
    except ValueError:  # the client itself refuses an invalid URL
        return
    assert resp.status < 500
    if resp.status >= 400 and resp.content_type == "application/json":
        assert "error" in await resp.json()


@pytest.mark.parametrize(
    "path",
    [
        "/hooks/..%2F..%2Fetc%2Fpasswd?token=x",
        "/hooks/shop%00?token=x",
        "/hooks/shop'%20OR%201=1--?token=x",
        "/hooks/%E2%80%AEpohs?token=x",
        "/hooks/" + "a" * 300 + "?token=x",
    ],
)
async def test_channel_name_tricks_are_404(
    client: TestClient, dsn: str, conn: asyncpg.Connection, path: str
) -> None:
    await add_channel(dsn, "shop", "wamm")
    resp = await client.post(path, data=b"{}")
    assert resp.status == 404
    assert (await resp.json())["error"] == "unknown_channel"
    assert await head(conn) == 0


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_wrong_methods(client: TestClient, method: str) -> None:
    resp = await client.request(method, "/hooks/shop", data=b"{}")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


async def test_forged_and_replayed_signatures(
    client: TestClient, dsn: str, conn: asyncpg.Connection
) -> None:
    await add_channel(dsn, "m", "meta", secrets_=["app-secret"])
    body, _ = sample("meta", "status_read.json")
    forged = [
        meta_signature("guess", body),
        "sha256=" + "0" * 64,
        "sha256=zz",
        "sha1=" + "0" * 40,
        "",
    ]
    for sig in forged:
        resp = await client.post("/hooks/m", data=body, headers={"X-Hub-Signature-256": sig})
        assert resp.status == 401, sig
    assert await head(conn) == 0
    good = {"X-Hub-Signature-256": meta_signature("app-secret", body)}
    first = await (await client.post("/hooks/m", data=body, headers=good)).json()
    replay = await (await client.post("/hooks/m", data=body, headers=good)).json()
    # a replay is indistinguishable from a provider retry: kept, marked, folded once
    assert (first["status"], replay["status"]) == ("stored", "duplicate")
    assert replay["duplicate_of"] == first["position"]


async def test_wrong_tokens_by_the_thousand_while_legit_traffic_flows(
    client: TestClient, dsn: str, conn: asyncpg.Connection
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    body, _ = sample("wamm", "msg_state_delivered.json")
    attack_codes: dict[int, int] = {}
    legit_codes: dict[int, int] = {}

    async def attack(i: int) -> None:
        resp = await client.post(f"/hooks/shop?token=guess{i}", data=b"{}")
        attack_codes[resp.status] = attack_codes.get(resp.status, 0) + 1

    async def legit(i: int) -> None:
        resp = await client.post(f"/hooks/shop?token={token}", data=body + b" " * i)
        legit_codes[resp.status] = legit_codes.get(resp.status, 0) + 1

    jobs = [attack(i) for i in range(2000)] + [legit(i) for i in range(200)]
    await asyncio.gather(*jobs)
    print(f"token attack: attack answers {attack_codes}, legit answers {legit_codes}")
    assert legit_codes == {200: 200}
    assert set(attack_codes) <= {401, 429} and attack_codes.get(429, 0) > 1900
    assert await head(conn) == 200


async def test_headers_too_many_or_too_large_are_refused(client: TestClient, dsn: str) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    many = {f"X-H{i}": "v" for i in range(300)}
    resp = await client.post(f"/hooks/shop?token={token}", data=b"{}", headers=many)
    assert 400 <= resp.status < 500
    big = {"X-Big": "v" * 20_000}
    resp = await client.post(f"/hooks/shop?token={token}", data=b"{}", headers=big)
    assert 400 <= resp.status < 500


async def test_slow_body_over_the_limit(aiohttp_client: Client, dsn: str) -> None:
    client = await aiohttp_client(make_app(app_settings(read_timeout=0.5, max_body=1000), dsn))
    token = await add_channel(dsn, "shop", "wamm")

    async def dribble() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 5
            await asyncio.sleep(0.05)  # the point of the test: a client that sends slowly

    resp = await client.post(f"/hooks/shop?token={token}", data=dribble())
    assert resp.status == 408
    assert (await resp.json())["error"] == "request_timeout"


async def test_header_timeout_and_connection_cap(dsn: str) -> None:
    app = make_app(
        app_settings(max_connections=5, max_connections_per_client=10, header_timeout=1.0), dsn
    )
    serving = await server.start(app, "127.0.0.1", 0)
    port, guard = serving.port, serving.guard
    try:
        # a client that never finishes its request head is cut off
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /hooks/shop HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await reader.read() == b""  # closed by the server
        assert guard.timed_out == 1
        writer.close()

        # past the cap, new connections are closed at once; the open ones still work
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", port)
        assert await extra_reader.read() == b""
        assert guard.refused >= 1
        extra_writer.close()
        r, w = held[0]
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        assert (await r.readline()).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
    finally:
        await serving.close()
