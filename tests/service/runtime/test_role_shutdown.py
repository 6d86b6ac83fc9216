"""Every role stops on SIGTERM even when its database hangs.

A supervised child whose supervisor died gets exactly one SIGTERM (PR_SET_PDEATHSIG) and
nobody follows it with SIGKILL, so a shutdown that waited on a hung connection (a graceful
close, a query's cancel request) would leave an orphan behind. The single-leader roles
terminate their connections instead of closing them, so they exit at once; the servers (ingest,
API) close their pools within ``eventstore.pool.CLOSE_SECONDS`` and then cut them.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from eventstore import locks
from tests.support.dbproxy import hanging_proxy
from tests.support.procs import Process, free_port


@pytest.mark.parametrize(
    ("role", "key", "leader"),
    [
        ("projector", locks.PROJECTOR_LEADER, "projector"),
        ("feed", locks.FEED_OUTBOX, "feed-outbox"),
    ],
)
async def test_sigterm_ends_a_leader_whose_database_hangs(
    dsn: str, conn: asyncpg.Connection, role: str, key: int, leader: str
) -> None:
    async with hanging_proxy(dsn) as proxy:
        proc = await Process(["serve", "--role", role], proxy.dsn).start()
        try:
            # lead_forever logs "<what> is the leader" once it holds the lock (the feed has
            # two leaders, the outbox and delivery, in either order: wait for this lock's)
            mark = f"{leader} is the leader"
            await proc.wait_lines(lambda lines: any(mark in x for x in lines), 60)
            assert await locks.holder(conn, key) is not None
            proxy.hang()
            assert proc.proc is not None
            loop = asyncio.get_running_loop()
            began = loop.time()
            proc.proc.terminate()
            async with asyncio.timeout(20):
                await proc.proc.wait()
            took = loop.time() - began
            print(f"{role}: SIGTERM with the database hung → exited in {took:.2f} s")
            assert took < 10
        finally:
            await proc.kill()
            proxy.resume()


@pytest.mark.parametrize(
    ("role", "marker"),
    [("ingest", "acklog ingest worker listening"), ("api", "acklog API listening")],
)
async def test_sigterm_ends_a_server_whose_database_hangs(dsn: str, role: str, marker: str) -> None:
    async with hanging_proxy(dsn) as proxy:
        args = ["serve", "--role", role, "--port", str(free_port())]
        proc = await Process(args, proxy.dsn, marker=marker).start()
        try:
            proxy.hang()  # the pool's open connections now wait for ever on every reply
            assert proc.proc is not None
            loop = asyncio.get_running_loop()
            began = loop.time()
            proc.proc.terminate()
            async with asyncio.timeout(30):
                await proc.proc.wait()
            took = loop.time() - began
            print(f"{role}: SIGTERM with the database hung → exited in {took:.2f} s")
            # before: Pool.close() waited for ever (the 25 s backstop of core.lifetime aside)
            assert took < 12
            assert proc.proc.returncode == 0, proc.lines[-20:]
        finally:
            await proc.kill()
            proxy.resume()
