"""``GET /v1/stream`` (Server-Sent Events) and the feed's ``/v1`` listings, on a real socket:
the API key, filters, resume with ``Last-Event-ID``, live events, a slow client dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from eventstore.append import write_batch
from projections.feed import events as fe
from projections.feed import subscriptions as subs
from projections.feed.outbox import Outbox
from service.core.config import StreamSettings
from service.runtime.app import make_app
from tests.support.apps import settings
from tests.support.payloads import event, meta_status

KEY = "stream-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def base(dsn: str) -> AsyncIterator[str]:
    fast = StreamSettings(poll=0.2, heartbeat=0.2)
    server = TestServer(make_app(settings(api_key=KEY, stream=fast), dsn), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def read_events(
    resp: aiohttp.ClientResponse, n: int, *, pings: list[str] | None = None
) -> list[tuple[str, str, fe.FeedEvent]]:
    """``n`` SSE events as (id, event, decoded data)."""
    out: list[tuple[str, str, fe.FeedEvent]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(20):
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                if pings is not None:
                    pings.append(line)
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.lstrip(" ")
                continue
            if "data" in fields:
                out.append((fields["id"], fields["event"], fe.decode(fields["data"].encode())))
                if len(out) == n:
                    return out
            fields = {}
    raise AssertionError(f"stream ended after {len(out)} events")


async def test_stream_resumes_with_last_event_id_and_filters(
    base: str, conn: asyncpg.Connection
) -> None:
    await write_batch(conn, [event(meta_status(f"wamid.{i}", "sent")) for i in range(5)])
    await Outbox("").catch_up(conn)
    changes = "type=message.state_changed"
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{base}/v1/stream?after=0&{changes}") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            first = await read_events(resp, 3)
        assert [e.key for _, _, e in first] == ["wamid.0", "wamid.1", "wamid.2"]  # type: ignore[union-attr]
        assert {kind for _, kind, _ in first} == {"message.state_changed"}
        last_id = first[-1][0]
        # reconnect where it stopped; new events arrive live
        async with http.get(
            f"{base}/v1/stream?{changes}", headers={"Last-Event-ID": last_id}
        ) as resp:
            rest = await read_events(resp, 2)
            assert [e.key for _, _, e in rest] == ["wamid.3", "wamid.4"]  # type: ignore[union-attr]
            await write_batch(conn, [event(meta_status("wamid.live", "sent"))])
            await Outbox("").catch_up(conn)
            pings: list[str] = []
            (live,) = await read_events(resp, 1, pings=pings)
            assert live[2].key == "wamid.live"  # type: ignore[union-attr]
        assert int(live[0]) > int(rest[-1][0])
        # a channel filter that matches nothing else
        async with http.get(f"{base}/v1/stream?after=0&channel=other") as resp:
            pings = []
            await write_batch(conn, [event(meta_status("wamid.o", "sent"), channel="other")])
            await Outbox("").catch_up(conn)
            only = await read_events(resp, 1, pings=pings)
            assert only[0][2].channel == "other"


async def test_stream_needs_the_key_and_refuses_bad_parameters(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/stream") as resp:
            assert resp.status == 401
        for query in ("type=nope", "after=x", "channel=..bad", "colour=red"):
            async with http.get(f"{base}/v1/stream?{query}", headers=AUTH) as resp:
                assert resp.status == 400, query
                assert (await resp.json())["error"] == "bad_request"


async def test_heartbeats_keep_an_idle_stream_alive(base: str) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{base}/v1/stream") as resp:
            async with asyncio.timeout(10):
                line = await resp.content.readline()
            assert line.startswith(b": ping")


async def test_dead_letters_and_subscriptions_listed(base: str, conn: asyncpg.Connection) -> None:
    sub, _ = await subs.add(conn, "crm", "http://127.0.0.1:9/hook")
    await write_batch(conn, [event(meta_status("wamid.d", "sent"))])
    await Outbox("").catch_up(conn)
    await subs.dead_letter(conn, sub.id, 1, 3, "answered 500", breaker=10)
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{base}/v1/feed/dead-letters?subscription=crm") as resp:
            page = await resp.json()
        assert [(d["seq"], d["error"]) for d in page["items"]] == [(1, "answered 500")]
        async with http.get(f"{base}/v1/feed/dead-letters?subscription=nope") as resp:
            assert resp.status == 404
        async with http.get(f"{base}/v1/feed/subscriptions") as resp:
            (item,) = (await resp.json())["items"]
        assert item["name"] == "crm" and item["cursor"] == 1
        assert "secret" not in str(item)


async def test_the_console_shows_each_subscription_and_its_deliveries(
    dsn: str, conn: asyncpg.Connection
) -> None:
    from tests.support.console_helpers import sign_in

    sub, _ = await subs.add(conn, "crm", "http://127.0.0.1:9/hook", channels=["shop"])
    await write_batch(conn, [event(meta_status("wamid.c", "sent"), channel="shop")])
    await Outbox("").catch_up(conn)
    await subs.record_attempt(conn, sub.id, 1, 1, "failed", 500, "answered 500", 0.25)
    server = TestServer(make_app(settings(api_key=KEY), dsn), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            await sign_in(browser, base, KEY)
            async with browser.get(f"{base}/ui/feed") as resp:
                assert resp.status == 200
                page = await resp.text()
    finally:
        await server.close()
    assert "crm" in page and "http://127.0.0.1:9/hook" in page and "shop" in page
    assert "answered 500" in page, page[page.find("<main") :]
    assert "2 event(s)" in page  # its state change and its anomaly (ack_for_unseen)


async def test_a_slow_consumer_is_dropped_not_buffered(dsn: str, conn: asyncpg.Connection) -> None:
    """A client that stops reading: once the socket's buffers are full a write waits, and
    after ACKLOG_STREAM_SEND_TIMEOUT the server drops the client instead of queueing."""
    import socket

    big = "x" * 100_000
    await conn.executemany(  # 20 MB of feed: far more than any socket buffer holds
        "INSERT INTO feed.events (seq, id, type, channel, position, body)"
        " VALUES ($1, gen_random_uuid(), 'message.state_changed', 'meta', $1, $2)",
        [(i, f'{{"pad":"{big}"}}'.encode()) for i in range(1, 201)],
    )
    quick = StreamSettings(send_timeout=0.5)
    server = TestServer(
        make_app(settings(api_key=KEY, stream=quick), dsn), host="127.0.0.1", port=0
    )
    await server.start_server()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        request = (
            f"GET /v1/stream?after=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        await asyncio.sleep(3.0)  # the slow consumer: reads nothing for six send timeouts
        received, reset = 0, False
        async with asyncio.timeout(20):
            try:
                while chunk := await loop.sock_recv(sock, 1 << 16):
                    received += len(chunk)
            except ConnectionResetError:
                reset = True  # aborted by the server (what was still queued is discarded)
        sock.close()
        assert reset or 0 < received < 10_000_000  # dropped, long before the 20 MB
        # the server still serves everyone else
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.get(str(server.make_url("/v1/feed/subscriptions"))) as resp:
                assert resp.status == 200
    finally:
        await server.close()
