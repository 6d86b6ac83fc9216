"""Invariant 1 under a database outage: 503 (never 200) while it is down, recovery after."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from eventstore import read as reader
from service.core.database import wait_and_migrate
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings

Client = Callable[..., Awaitable[TestClient]]


async def test_503_while_down_then_recovers_by_itself(
    aiohttp_client: Client, own_server: Any
) -> None:
    dsn = own_server.get_uri()
    await wait_and_migrate(dsn)
    token = await add_channel(dsn, "shop", "wamm")
    client = await aiohttp_client(make_app(settings(commit_timeout=3.0), dsn))
    url = f"/hooks/shop?token={token}"
    acked: list[bytes] = []

    async def post(body: bytes) -> int:
        resp = await client.post(url, data=body)
        if resp.status == 200:
            acked.append(body)
        return resp.status

    assert await post(b'{"n": 0}') == 200

    await asyncio.to_thread(own_server._stop)
    statuses = [await post(b'{"down": %d}' % i) for i in range(5)]
    assert set(statuses) == {503}, statuses
    resp = await client.post(url, data=b"{}")
    assert resp.headers["Retry-After"] == "5"
    assert (await resp.json())["error"] == "unavailable"
    assert (await client.get("/readyz")).status == 503

    await asyncio.to_thread(own_server.ensure_postgres_running)
    loop = asyncio.get_running_loop()
    start = loop.time()
    recovered = None
    for i in range(200):
        if await post(b'{"up": %d}' % i) == 200:
            recovered = loop.time() - start
            break
        await asyncio.sleep(0.05)
    assert recovered is not None and recovered < 10, "ingest did not recover by itself"
    assert (await client.get("/readyz")).status == 200

    conn = await asyncpg.connect(dsn)
    try:
        stored = [e.body for e in await reader.read(conn, limit=10_000)]
    finally:
        await conn.close()
    assert stored == acked, "every 200 must be in the log, and nothing else from the outage"
