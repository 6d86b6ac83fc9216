"""The embedded PostgreSQL is supervised like the children: killed, it comes back by itself.

``acklog serve`` without ``DATABASE_URL`` runs PostgreSQL in ``$ACKLOG_DATA_DIR/pg``. A
real ``serve`` here; the embedded postmaster is killed with SIGKILL (as the OOM killer
would); the supervisor starts it again, the children reconnect by themselves, webhooks are
answered 200 again, and the log says so in two lines instead of a stream of tracebacks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

import aiohttp
import asyncpg

from eventstore.read import read
from tests.support.apps import add_channel
from tests.support.payloads import waha_outgoing
from tests.support.procs import Process, free_port


def postmaster(datadir: Path) -> tuple[int, str]:
    """(pid, DSN) of the embedded server, from its ``postmaster.pid``."""
    lines = (datadir / "postmaster.pid").read_text().splitlines()
    return int(lines[0]), f"postgresql://postgres:@/postgres?host={lines[4].strip()}"


async def post_until(session: aiohttp.ClientSession, url: str, body: bytes, timeout: float) -> int:
    """Post ``body`` until it is answered 200 (503 meanwhile); seconds it took."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    statuses: list[int] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with session.post(url, data=body) as resp:
                    await resp.read()
                    statuses.append(resp.status)
                    if resp.status == 200:
                        return int(loop.time() - began)
                    assert resp.status == 503, resp.status
            except aiohttp.ClientConnectionError:
                statuses.append(0)
            await asyncio.sleep(0.1)


async def test_a_killed_embedded_postgres_is_restarted() -> None:
    data = Path(tempfile.mkdtemp(prefix="acklog-embedded-"))
    port = free_port()
    proc = Process(
        ["serve", "--port", str(port)],
        "",  # no DATABASE_URL: the embedded server
        marker="acklog listening",
        ACKLOG_DATA_DIR=str(data),
    )
    await proc.start(120)
    try:
        pid, dsn = postmaster(data / "pg")
        token = await add_channel(dsn, "emb", "waha")
        url = f"http://127.0.0.1:{port}/hooks/emb?token={token}"
        first, second = waha_outgoing("EMB1"), waha_outgoing("EMB2")
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=first) as resp:
                assert resp.status == 200, await resp.text()
            before = len(proc.lines)
            os.kill(pid, signal.SIGKILL)
            took = await post_until(session, url, second, timeout=60)
            await proc.wait_lines(lambda lines: any("is back" in x for x in lines[before:]), 30)
            # a little longer: whatever the children log after the outage is in
            await asyncio.sleep(2)
        after = proc.lines[before:]
        print(f"embedded PostgreSQL killed → 200 again after {took} s; log:", *after, sep="\n")
        assert any("embedded PostgreSQL exited" in x and "restarting" in x for x in after)
        assert not [x for x in after if "Traceback" in x]
        # one line per process and thing that lost the database, not one per retry; the
        # refused webhooks have their own rate-limited lines (acklog.refused)
        warnings = [x for x in after if "WARNING" in x and "acklog.refused" not in x]
        assert len(warnings) <= 15, warnings
        new_pid, dsn = postmaster(data / "pg")
        assert new_pid != pid
        conn = await asyncpg.connect(dsn)
        try:
            assert [e.body for e in await read(conn)] == [first, second]
        finally:
            await conn.close()
    finally:
        await proc.stop()
