"""The query API and the console read from a standby (``ACKLOG_API_DATABASE_URL``).

Two real PostgreSQL clusters (``tests/support/pgpair.py``), ``acklog serve`` with
``DATABASE_URL`` on the primary and ``ACKLOG_API_DATABASE_URL`` on the synchronous standby.
Replay paused on the standby proves where reads go: a webhook answered 200 is not in ``/v1``
until replay resumes, while the lag shows in the header and the metric. Console sessions are
written and checked on the primary (the standby refuses writes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from service.core.database import wait_and_migrate
from tests.support import pgpair
from tests.support.apps import add_channel
from tests.support.console_helpers import sign_in
from tests.support.payloads import waha_outgoing
from tests.support.procs import Process, free_port

UNAVAILABLE = pgpair.unavailable()
KEY = "standby-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def pair() -> AsyncIterator[tuple[pgpair.Node, pgpair.Node]]:
    assert UNAVAILABLE is None, f"the standby test cannot run here: {UNAVAILABLE}"
    async with pgpair.primary_and_standby() as nodes:
        yield nodes


async def messages(session: aiohttp.ClientSession, base: str) -> tuple[str, str | None]:
    async with session.get(f"{base}/v1/channels/sb/messages", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text(), resp.headers.get("X-Acklog-Replica-Lag")


async def until_listed(session: aiohttp.ClientSession, base: str, message_id: str) -> str | None:
    """Poll (the projector folds, the standby replays) until ``message_id`` is listed."""
    async with asyncio.timeout(30):
        while True:
            body, lag = await messages(session, base)
            if message_id in body:
                return lag
            await asyncio.sleep(0.1)


async def test_api_reads_from_the_standby_and_writes_sessions_to_the_primary(
    pair: tuple[pgpair.Node, pgpair.Node],
) -> None:
    primary, standby = pair
    admin = await asyncpg.connect(primary.dsn())
    try:
        await admin.execute("CREATE DATABASE acklog")
    finally:
        await admin.close()
    main = f"postgresql://postgres@127.0.0.1:{primary.port}/acklog"
    replica = f"postgresql://postgres@127.0.0.1:{standby.port}/acklog"
    await wait_and_migrate(main, timeout=30)
    token = await add_channel(main, "sb", "waha")
    port = free_port()
    server = Process(
        ["serve", "--port", str(port)],
        main,
        marker="acklog listening",
        ACKLOG_API_DATABASE_URL=replica,
        ACKLOG_API_KEY=KEY,
        ACKLOG_SNAPSHOT_INTERVAL="0.2",
    )
    await server.start()
    base = f"http://127.0.0.1:{port}"
    hook = f"{base}/hooks/sb?token={token}"
    paused = await asyncpg.connect(standby.dsn("acklog"))
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.post(hook, data=waha_outgoing("SB1")) as resp:
                assert resp.status == 200
            assert await until_listed(session, base, "SB1") is not None

            # replay paused: a webhook committed on the primary is not read back yet
            await paused.execute("SELECT pg_wal_replay_pause()")
            async with session.post(hook, data=waha_outgoing("SB2")) as resp:
                assert resp.status == 200
            async with asyncio.timeout(30):
                while True:  # the lag shows once the standby received what it holds back
                    body, lag = await messages(session, base)
                    assert "SB2" not in body
                    if lag is not None and float(lag) > 0:
                        break
                    await asyncio.sleep(0.1)
            async with session.get(f"{base}/metrics") as resp:
                exposition = await resp.text()
            assert "acklog_api_replica_lag_seconds" in exposition
            lags = [
                float(line.split()[-1])
                for line in exposition.splitlines()
                if line.startswith("acklog_api_replica_lag_seconds")
            ]
            assert lags and lags[0] > 0, lags
            await paused.execute("SELECT pg_wal_replay_resume()")
            await until_listed(session, base, "SB2")

            # the console: a session written to the primary, seen at once
            signed = await sign_in(session, base, KEY)
            assert signed.status == 303, signed.status
            async with session.get(f"{base}/ui/", allow_redirects=False) as page:
                assert page.status == 200, page.status
            # the projector page: the leader's advisory lock is looked up on the primary
            async with session.get(f"{base}/ui/projector", allow_redirects=False) as page:
                assert page.status == 200, page.status
                assert page.headers.get("X-Acklog-Replica-Lag") is not None
    finally:
        await paused.close()
        await server.stop()
    conn = await asyncpg.connect(main)
    try:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions") == 1
    finally:
        await conn.close()
    output = "\n".join(server.lines)
    assert "Traceback" not in output, output
