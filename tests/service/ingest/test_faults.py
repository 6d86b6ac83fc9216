"""Faults with real processes: kill -9 under load, database restart, projector takeover.

Every figure a test measures is printed (``pytest -s``) and quoted in docs/reliability.md.
``make soak`` runs the same tests with ``ACKLOG_SOAK=N``: N times the load and N kill cycles.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from eventstore.append import write_batch
from eventstore.pool import connect
from eventstore.read import head, read
from projections.rebuild import verify
from projections.runner import Projector
from service.core.database import wait_and_migrate
from tests.projections.fold.test_projector import leader_pid, traffic
from tests.support.apps import add_channel
from tests.support.payloads import waha_ack, waha_outgoing
from tests.support.procs import free_port, project, serve

SOAK = max(int(os.environ.get("ACKLOG_SOAK", "1")), 1)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


class Load:
    """Concurrent webhooks with recorded ids; waits (on an event) while the server is away."""

    def __init__(self, url: str, total: int, workers: int = 32, patience: float = 120.0) -> None:
        self.url = url
        self.patience = patience  # seconds a worker keeps retrying before it gives up
        self.total = total
        self.workers = workers
        self.up = asyncio.Event()
        self.up.set()
        self.acked: list[bytes] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.gave_up = 0  # webhooks still refused when the patience ran out
        self._ids = itertools.count()
        self._progress = asyncio.Condition()

    def body(self, i: int) -> bytes:
        return waha_outgoing(f"LOAD{i:06d}") if i % 2 == 0 else waha_ack(f"LOAD{i - 1:06d}", 2)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.workers)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        deadline = asyncio.get_running_loop().time() + self.patience
        while (i := next(self._ids)) < self.total:
            body = self.body(i)
            while asyncio.get_running_loop().time() < deadline:  # retried until then, at most
                await self.up.wait()
                try:
                    async with session.post(self.url, data=body) as resp:
                        await resp.read()
                        self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                        if resp.status == 200:
                            self.acked.append(body)
                            async with self._progress:
                                self._progress.notify_all()
                            break
                        if resp.status != 503:
                            break
                except (aiohttp.ClientError, OSError):
                    self.errors += 1
                    if not self.up.is_set():
                        continue  # the server is away: retry once it is back, as providers do
                    break
            else:
                self.gave_up += 1

    async def until_acked(self, n: int) -> None:
        async with asyncio.timeout(self.patience), self._progress:
            await self._progress.wait_for(lambda: len(self.acked) >= n)


async def stored_bodies(conn: asyncpg.Connection) -> list[bytes]:
    return [e.body for e in await read(conn, limit=1_000_000)]


async def test_kill_9_under_load_loses_nothing_acknowledged(
    dsn: str, conn: asyncpg.Connection
) -> None:
    token = await add_channel(dsn, "w", "waha")
    port = free_port()
    server = await serve(dsn, port).start()
    load = Load(f"http://127.0.0.1:{port}/hooks/w?token={token}", total=3000 * SOAK)
    runner = asyncio.create_task(load.run())
    acked_before_kill = 0
    try:
        for cycle in range(SOAK):
            await load.until_acked(500 + cycle * 2500)
            load.up.clear()
            await server.kill()  # SIGKILL mid-load: in-flight requests get no answer
            acked_before_kill = len(load.acked)
            server = await serve(dsn, port).start()
            load.up.set()
        async with asyncio.timeout(120 * SOAK):
            await runner
    finally:
        load.up.set()
        runner.cancel()
        await server.stop()

    stored = await stored_bodies(conn)
    missing = [b for b in load.acked if b not in set(stored)]
    print(
        f"kill -9 under load ({SOAK} kills): sent {load.total}, acked {len(load.acked)}"
        f" ({acked_before_kill} before the last kill), stored {len(stored)}, acked but missing"
        f" {len(missing)}, connection errors {load.errors}, statuses {load.statuses}"
    )
    assert not missing, "a webhook answered 200 is not in the log"
    assert len(load.acked) == load.total
    await Projector(dsn).catch_up(conn)
    assert await verify(dsn) == []


async def test_database_restart_under_load(own_server: Any) -> None:
    dsn = own_server.get_uri()
    await wait_and_migrate(dsn)
    token = await add_channel(dsn, "w", "waha")
    port = free_port()
    server = await serve(dsn, port).start()
    load = Load(f"http://127.0.0.1:{port}/hooks/w?token={token}", total=2000 * SOAK, workers=16)
    runner = asyncio.create_task(load.run())
    loop = asyncio.get_running_loop()
    try:
        await load.until_acked(300)
        await asyncio.to_thread(own_server._stop)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 503
            async with session.post(
                f"http://127.0.0.1:{port}/hooks/w?token={token}", data=b'{"while":"down"}'
            ) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "5"
        acked_while_down = len(load.acked)
        await asyncio.to_thread(own_server.ensure_postgres_running)
        restarted = loop.time()
        await load.until_acked(acked_while_down + 1)
        recovered = loop.time() - restarted
        async with asyncio.timeout(120):
            await runner
        conn = await connect(dsn)
        try:
            target = await head(conn)
            caught_up = None
            while caught_up is None:  # the serve's own projector must recover by itself
                position = await conn.fetchval(
                    "SELECT position FROM checkpoints WHERE name = 'messages'"
                )
                if position == target:
                    caught_up = loop.time() - restarted
                    break
                await asyncio.sleep(0.05)
            stored = set(await stored_bodies(conn))
        finally:
            await conn.close()
    finally:
        load.up.set()
        runner.cancel()
        await server.stop()
    missing = [b for b in load.acked if b not in stored]
    print(
        f"database restart under load: acked {len(load.acked)}, 503s {load.statuses.get(503, 0)},"
        f" ingest recovered {recovered:.2f}s after the restart, projector caught up"
        f" {caught_up:.2f}s after it, acked but missing {len(missing)}"
    )
    assert not missing
    assert load.statuses.get(503, 0) > 0, "the outage was not seen as 503"
    assert recovered < 10 and caught_up < 20


async def test_projector_process_killed_mid_batch_standby_takes_over(
    dsn: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    async with pool.acquire() as c:
        for seed in range(10 * SOAK):
            await write_batch(c, traffic(1000, seed=seed))
    target = await head(conn)
    first, second = project(dsn), project(dsn)
    await first.start()
    await second.start()
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + 60
        while True:  # another process has no event to await: poll the checkpoint
            if await conn.fetchval("SELECT position FROM checkpoints WHERE name = 'messages'"):
                break
            assert loop.time() < deadline, "no projector wrote a checkpoint within 60 s"
            await asyncio.sleep(0.01)
        backend = await leader_pid(conn)
        app = await conn.fetchval(
            "SELECT application_name FROM pg_stat_activity WHERE pid = $1", backend
        )
        leader = first if app == f"acklog-projector-{first.pid}" else second
        assert app == f"acklog-projector-{leader.pid}"
        killed_at_position = await conn.fetchval(
            "SELECT position FROM checkpoints WHERE name = 'messages'"
        )
        await leader.kill()
        killed = loop.time()
        takeover = None
        while True:
            assert loop.time() - killed < 60, (
                f"the standby did not catch up within 60 s: {takeover}"
            )
            new_backend = await leader_pid(conn)
            if takeover is None and new_backend and new_backend != backend:
                takeover = loop.time() - killed
            position = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = 'messages'"
            )
            if position == target:
                break
            await asyncio.sleep(0.01)
        finished = loop.time() - killed
    finally:
        await first.stop()
        await second.stop()
    print(
        f"projector kill -9 at position {killed_at_position} of {target}: standby leading after"
        f" {takeover:.3f}s, caught up {finished:.2f}s after the kill"
    )
    assert killed_at_position < target, "the leader was killed before it finished"
    assert takeover is not None and takeover < 5
    assert await conn.fetchval("SELECT count(*) FROM rm.timeline") == await conn.fetchval(
        "SELECT count(*) FROM events e WHERE NOT EXISTS"
        " (SELECT 1 FROM rm.quarantine q WHERE q.position = e.position)"
    )
    assert await verify(dsn) == []


def rss_mib(pid: int) -> float:
    """Resident memory of a server: the process and its children (``acklog serve`` runs its
    roles as child processes), in MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue  # gone meanwhile
    assert total, "no VmRSS"
    return total / 1024


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from every process's parent in ``/proc/*/stat``.

    (``/proc/<pid>/task/<tid>/children`` would be shorter, but proc(5) calls it unreliable
    unless the children are stopped: a child forked a moment ago can be missing from it.)
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses: ppid follows the last ')'
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


async def test_memory_stays_bounded_under_attack(dsn: str, conn: asyncpg.Connection) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    port = free_port()
    server = await serve(dsn, port, ACKLOG_MAX_BODY="1048576").start()
    base = f"http://127.0.0.1:{port}/hooks"
    codes: dict[int, int] = {}
    try:
        async with aiohttp.ClientSession() as session:

            async def hit(url: str, body: bytes) -> None:
                try:
                    async with session.post(url, data=body) as resp:
                        codes[resp.status] = codes.get(resp.status, 0) + 1
                except aiohttp.ClientError:
                    codes[0] = codes.get(0, 0) + 1  # the server may close on a 413

            await hit(f"{base}/shop?token={token}", b"{}")  # warm up
            before = rss_mib(server.pid)
            sem = asyncio.Semaphore(64)

            async def limited(url: str, body: bytes) -> None:
                async with sem:
                    await hit(url, body)

            attack = [limited(f"{base}/shop?token=bad{i}", b"x" * 100_000) for i in range(3000)]
            attack += [limited(f"{base}/shop?token={token}", b"y" * 2_000_000) for _ in range(100)]
            attack += [limited(f"{base}/nope{i}?token=x", b"{}") for i in range(2000)]
            await asyncio.gather(*attack)
            after = rss_mib(server.pid)
            async with session.post(f"{base}/shop?token={token}", data=b"{}") as resp:
                assert resp.status == 200, "legitimate traffic still served"
    finally:
        await server.stop()
    print(
        f"attack: {sum(codes.values())} requests, answers {codes}; RSS {before:.0f} MiB before,"
        f" {after:.0f} MiB after"
    )
    assert not any(500 <= c < 600 for c in codes)
    assert after - before < 64, "memory grew under attack"
    assert await head(conn) == 2
