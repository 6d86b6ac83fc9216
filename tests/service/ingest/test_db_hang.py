"""Invariant 1 when the database *hangs* (sockets open, nothing answered): the commit timeout
fires and the answer is 503 with ``Retry-After``, never a 200, never a 500, never a hang.

``test_db_outage`` stops the server, so connections fail fast; here a proxy between the app
and PostgreSQL stops forwarding, so only ``commit_timeout`` can end the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp.test_utils import TestClient

from eventstore import read as reader
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.dbproxy import hanging_proxy

Client = Callable[..., Awaitable[TestClient]]
COMMIT_TIMEOUT = 1.0


async def test_hung_database_answers_503_after_the_commit_timeout(
    aiohttp_client: Client, dsn: str
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    async with hanging_proxy(dsn) as proxy:
        app = make_app(settings(commit_timeout=COMMIT_TIMEOUT), proxy.dsn)
        client = await aiohttp_client(app)
        url = f"/hooks/shop?token={token}"
        first = await client.post(url, data=b'{"n": "before"}')
        assert first.status == 200, await first.text()  # the channel is cached from here on

        proxy.hang()
        started = time.monotonic()

        async def post(i: int) -> tuple[int, str | None, dict[str, str]]:
            resp = await client.post(url, data=b'{"hung": %d}' % i)
            return resp.status, resp.headers.get("Retry-After"), await resp.json()

        answers = await asyncio.wait_for(
            asyncio.gather(*(post(i) for i in range(4))), COMMIT_TIMEOUT + 5
        )
        waited = time.monotonic() - started
        for status, retry_after, body in answers:
            assert status == 503, answers
            assert retry_after == "5"
            assert body["error"] == "unavailable"
        # the timeout, not a fast failure, ended them (the proxy never refused anything)
        assert waited >= COMMIT_TIMEOUT * 0.9, waited

        proxy.resume()
        deadline = time.monotonic() + 15
        recovered = None
        while recovered is None and time.monotonic() < deadline:
            resp = await client.post(url, data=b'{"n": "after"}')
            if resp.status == 200:
                recovered = await resp.json()
            else:
                assert resp.status == 503, await resp.text()
                await asyncio.sleep(0.1)
        assert recovered is not None, "ingest did not recover once the database answered"

    conn = await asyncpg.connect(dsn)
    try:
        stored = [e.body for e in await reader.read(conn, limit=100)]
    finally:
        await conn.close()
    # every 200 is in the log; a 503'd event may be there too (it was committed after its
    # answer was given up on, and the provider's retry becomes a duplicate): never the reverse
    assert b'{"n": "before"}' in stored
    assert b'{"n": "after"}' in stored
